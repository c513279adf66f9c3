// The one place the examples build a MemoryTargetImage: a target that writes received pages straight into
// memory the embedder owns. `zeroed: true` says that memory starts all zeros (fresh memory does), so the
// source leaves zero pages out of round 1 without the target reading the region to find out.
import { MemoryTargetImage } from 'pagewire';

export function memoryTargetImage(region) {
  return new MemoryTargetImage(region, { zeroed: true });
}
