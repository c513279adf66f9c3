// Shared by the tests: temp dirs, the CLI binary spawned as a user would, and a raw protocol client.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SessionKeyPair, joinProof } from '../dist/src/transport/session-secret.js';
import { MAX_VERSION, encodeJoinHead, frameHeader } from '../dist/src/wire/messages.js';

/** The HELLO fields a hand-driven source sends as this build does: its version, a usable session key, one region. */
export const HELLO_V4 = {
  minVersion: MAX_VERSION, maxVersion: MAX_VERSION, sessionKey: SessionKeyPair.generate().publicKey, extraRegions: [],
};

/**
 * The JOIN a hand-driven source sends for `stream`: it proves the session secret agreed by its HELLO (one
 * with a session key of `keys`) and the target's WELCOME payload.
 */
export function provenJoin(keys: SessionKeyPair, helloPayload: Buffer, welcomePayload: Buffer, stream: number, migrationId: Buffer): Buffer {
  const welcomeKey = welcomePayload.subarray(12, 44);
  const secret = keys.secretWith(welcomeKey, helloPayload, welcomeKey);
  const head = encodeJoinHead({ version: MAX_VERSION, stream, migrationId });
  return Buffer.concat([head, joinProof(secret, welcomeKey, head)]);
}

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

export function tempDir(prefix = 'pagewire-test-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export interface Spawned {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exit: Promise<number | null>;
  /** Resolves with the first stderr match of `pattern` (rejects after timeoutMs or on exit). */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): Spawned {
  return spawnCommand(process.execPath, [BIN, ...args], env);
}

/** Any command, captured as spawnCli captures the CLI (for the CLI run through a wrapper such as `ip netns exec`). */
export function spawnCommand(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Spawned {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child, exit, stdout: () => out, stderr: () => err,
    waitForStderr(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = err.match(pattern);
          if (m) { clearInterval(timer); resolve(m); }
        };
        const timer = setInterval(check, 20);
        setTimeout(() => { clearInterval(timer); reject(new Error(`no ${pattern} on stderr within ${timeoutMs} ms:\n${err}`)); }, timeoutMs);
        void exit.then(() => { check(); clearInterval(timer); reject(new Error(`exited before ${pattern}:\n${err}`)); });
      });
    },
  };
}

/** The last stdout line, parsed: the CLI's --json contract. */
export function lastJson(text: string): Record<string, unknown> {
  const lines = text.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
}

/** Starts `pagewire receive` on a free port and returns it with the port it printed. */
export async function startReceiver(out: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Spawned & { port: number }> {
  const receiver = spawnCli(['receive', '--listen', '127.0.0.1:0', '--out', out, '--json', ...extra], env);
  const match = await receiver.waitForStderr(/listening on [^\s]+:(\d+)/);
  return Object.assign(receiver, { port: Number(match[1]) });
}

/** A raw TCP client for speaking (or mangling) the protocol by hand. */
export function rawClient(port: number): Promise<{ socket: Socket; received(): Buffer; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => {});
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.once('connect', () => resolve({ socket, received: () => Buffer.concat(chunks), closed }));
    socket.once('error', reject);
  });
}

/** Resolves once `count` bytes came back from the peer, or it hung up. */
export function answered(client: { socket: Socket; received(): Buffer; closed: Promise<void> }, count: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => { if (client.received().length >= count) resolve(); };
    client.socket.on('data', check);
    void client.closed.then(() => resolve());
    check();
  });
}

/** Waits until `count` bytes came back from the peer (a WELCOME or JOINED frame, say), failing after 10 s. */
export function receivedAtLeast(client: { socket: Socket; received(): Buffer }, count: number): Promise<void> {
  return withTimeout(new Promise<void>((resolve) => {
    const check = () => {
      if (client.received().length < count) return;
      client.socket.off('data', check);
      resolve();
    };
    client.socket.on('data', check);
    check();
  }), 10_000, `${count} bytes from the peer`);
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms))]);
}

/** A seeded workload of edits on a region: small runs, zeroed pages, copies, text, fresh random pages. */
export function randomWorkload(seed: number, pageSize: number, pageCount: number) {
  let state = seed >>> 0;
  // The high bits: an LCG's low bits repeat with short periods.
  const rnd = (n: number) => Math.floor(((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32) * n);
  const region = new Uint8Array(pageSize * pageCount);
  const page = (p: number) => region.subarray(p * pageSize, (p + 1) * pageSize);
  const edit = (p = rnd(pageCount), kind = rnd(6)) => {
    switch (kind) {
      case 0: { const at = rnd(pageSize - 64); for (let i = 0; i < 1 + rnd(64); i++) page(p)[at + i] = rnd(256); break; }
      case 1: page(p).fill(0); break;
      case 2: page(p).set(page(rnd(pageCount)).slice()); break;
      case 3: page(p).set(Buffer.alloc(pageSize, `line ${rnd(1000)} of some text; `)); break;
      case 4: for (let i = 0; i < pageSize; i++) page(p)[i] = rnd(256); break;
      default: page(p)[rnd(pageSize)] ^= 1 + rnd(255);
    }
  };
  /** Some pages, in a random order, each once. */
  const someIndices = () => {
    const picked = [...new Set(Array.from({ length: 1 + rnd(pageCount) }, () => rnd(pageCount)))];
    return Uint32Array.from(picked);
  };
  return { region, edit, someIndices, rnd };
}

/** One wire frame: header and payload, as a source or target would write it. */
export function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([frameHeader(type, payload.length), payload]);
}

/** Random bytes in shared memory (a writer thread can share them), every `zeroEvery`-th 4 KiB page zero. */
export function randomShared(bytes: number, zeroEvery = 4): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(bytes);
  const view = new Uint8Array(sab);
  for (let off = 0; off < bytes; off += 65536) randomFillSync(view, off, Math.min(65536, bytes - off));
  for (let p = 0; p < bytes / 4096; p += zeroEvery) view.fill(0, p * 4096, (p + 1) * 4096);
  return sab;
}
