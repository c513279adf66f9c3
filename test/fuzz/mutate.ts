// How the stream fuzzers damage a valid byte stream: cut it short, drop a chunk, or change a few bytes.
export function mutate(stream: Buffer, rnd: (n: number) => number): Buffer {
  let out = Buffer.from(stream);
  switch (rnd(4)) {
    case 0: out = out.subarray(0, rnd(out.length)); break; // truncated
    case 1: { // a chunk dropped
      const at = rnd(out.length);
      out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + rnd(64)))]);
      break;
    }
    default: // bytes changed
      for (let k = 0; k < 1 + rnd(6); k++) out[rnd(out.length)] = rnd(256);
  }
  return out;
}
