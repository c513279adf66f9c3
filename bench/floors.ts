// The two floors every migration is measured against, each over the same bytes in the same run:
//   write floor  the image's bytes written into a new file on the scenario's storage (pwrite in 1 MiB
//                chunks, then fsync), by a fresh process: what landing the region on that storage costs
//   TCP copy     the image's bytes over one 127.0.0.1 connection between the two agent processes, into
//                a pre-faulted buffer: what moving them between two processes costs
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ChildRun, describeExit, lastJsonLine } from './child-run.js';
import type { AgentClient, BaselineReceiveResult, BaselineSendResult } from './protocol.js';
import { round } from './stats.js';
import type { WriteFloorTimes } from './write-floor.js';

const WRITE_FLOOR_PATH = fileURLToPath(new URL('./write-floor.js', import.meta.url));

export interface WriteFloor {
  totalMs: number;
  writeMs: number;
  fsyncMs: number;
  bytes: number;
  mbPerSec: number;
}

export interface TcpCopy {
  /** From connect() to the target's one-byte ack of the last byte. */
  totalMs: number;
  connectMs: number;
  targetAcceptToLastByteMs: number;
  bytes: number;
  mbPerSec: number;
}

/** Writes the image's bytes into outPath (which must not exist) and removes it again. */
export async function measureWriteFloor(imagePath: string, outPath: string, timeoutMs: number): Promise<WriteFloor> {
  const label = 'write floor';
  try {
    const exit = await new ChildRun(label, process.execPath, [WRITE_FLOOR_PATH, imagePath, outPath], { timeoutMs }).exited;
    if (exit.code !== 0) throw new Error(`${label} failed: ${describeExit(exit)}`);
    const t = lastJsonLine(exit, label) as unknown as WriteFloorTimes;
    return {
      totalMs: round(t.totalMs, 2), writeMs: round(t.writeMs, 2), fsyncMs: round(t.fsyncMs, 2), bytes: t.bytes,
      mbPerSec: round((t.bytes / 1e6) / (t.totalMs / 1000)),
    };
  } finally {
    rmSync(outPath, { force: true });
  }
}

/** The plain TCP copy of the image between the two agents; throws if the bytes differ. */
export async function measureTcpCopy(source: AgentClient, target: AgentClient, imagePath: string, size: number, timeoutMs: number): Promise<TcpCopy> {
  const { port } = await target.request<{ port: number }>({ cmd: 'baseline-listen', timeoutMs }, timeoutMs);
  const [sent, got] = await Promise.all([
    source.request<BaselineSendResult>({ cmd: 'baseline-send', port, imagePath, timeoutMs }, timeoutMs + 30_000),
    target.request<BaselineReceiveResult>({ cmd: 'baseline-result' }, timeoutMs + 30_000),
  ]);
  if (got.bytesReceived !== size || got.sha256 !== sent.sha256) {
    throw new Error(`TCP copy is wrong: ${got.bytesReceived} of ${size} bytes, sha256 ${got.sha256} vs ${sent.sha256}`);
  }
  return {
    totalMs: round(sent.totalMs, 2), connectMs: round(sent.connectMs, 3), targetAcceptToLastByteMs: round(got.acceptToLastByteMs, 2),
    bytes: got.bytesReceived, mbPerSec: round((size / 1e6) / (sent.totalMs / 1000)),
  };
}
