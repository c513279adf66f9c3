// The error contract as an embedder meets it: every way the public API can reject is a PagewireError
// with a documented code, naming the option or hook at fault, with what went wrong underneath as
// `cause`. Each case here once surfaced as a raw Node error or as the catch-all PW_ERR.
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AbortedError, DirtyBitmap, FileTargetImage, HookError, InvalidArgumentError, ListenError, MemoryRegion, MemoryTargetImage,
  MigrationSource, MigrationTarget, PagewireError, PeerError, StorageError, type MigrationSourceOptions, type MigrationTargetOptions,
  type SourceHooks,
} from '../src/index.js';

const PAGE = 4096;
const BYTES = 64 * PAGE;

function sourceRegion(): MemoryRegion {
  const bytes = Buffer.alloc(BYTES);
  randomFillSync(bytes);
  return MemoryRegion.fromMemory(bytes);
}

function memoryImage(): MemoryTargetImage {
  return new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(BYTES)), { zeroed: true });
}

/** What `action` threw or rejected with; fails the test if it did neither. */
async function failure(action: () => unknown): Promise<unknown> {
  try {
    await action();
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

/** Asserts the contract: a PagewireError of `type` whose code is `code` and whose message names `named`. */
function expectCoded(error: unknown, type: abstract new (...args: never[]) => PagewireError, code: string, named: RegExp): void {
  expect(error).toBeInstanceOf(PagewireError);
  expect(error).toBeInstanceOf(type);
  expect((error as PagewireError).code).toBe(code);
  expect((error as PagewireError).message).toMatch(named);
}

function sourceOptions(port: number, hooks: Partial<SourceHooks> = {}): MigrationSourceOptions {
  return {
    region: sourceRegion(), dirtyBitmap: new DirtyBitmap(BYTES / PAGE), host: '127.0.0.1', port, streams: 1,
    hooks: { pause: () => {}, resume: () => {}, ...hooks },
  };
}

describe('options are checked up front, naming the option', () => {
  it('a source without hooks', () => {
    const { hooks: _, ...withoutHooks } = sourceOptions(7000);
    expectCoded(catchSync(() => new MigrationSource(withoutHooks as MigrationSourceOptions)), InvalidArgumentError, 'PW_ERR_INVALID_ARGUMENT', /options\.hooks must be an object/);
  });

  it('a source hook that is not a function', () => {
    const options = sourceOptions(7000, { pause: 'stop' as unknown as SourceHooks['pause'] });
    expectCoded(catchSync(() => new MigrationSource(options)), InvalidArgumentError, 'PW_ERR_INVALID_ARGUMENT',
      /options\.hooks\.pause must be a function/);
  });

  it('a source port out of range and a target timeout of the wrong type', async () => {
    expectCoded(catchSync(() => new MigrationSource(sourceOptions(70_000))), InvalidArgumentError, 'PW_ERR_INVALID_ARGUMENT',
      /options\.port must be a whole number from 1 to 65535/);
    const options = { image: memoryImage(), timeoutMs: '5s' } as unknown as MigrationTargetOptions;
    expectCoded(await failure(() => MigrationTarget.listen(options)), InvalidArgumentError, 'PW_ERR_INVALID_ARGUMENT',
      /options\.timeoutMs must be a positive number/);
  });

  it('a target hook that is not a function', async () => {
    const options = { image: memoryImage(), hooks: { resume: true } } as unknown as MigrationTargetOptions;
    expectCoded(await failure(() => MigrationTarget.listen(options)), InvalidArgumentError, 'PW_ERR_INVALID_ARGUMENT',
      /options\.hooks\.resume must be a function/);
  });

  it('a target certificate that is not PEM', async () => {
    const tlsCertificates = { cert: Buffer.from('not a certificate'), key: Buffer.from('not a key') };
    expectCoded(await failure(() => MigrationTarget.listen({ image: memoryImage(), tlsCertificates })), InvalidArgumentError,
      'PW_ERR_INVALID_ARGUMENT', /options\.tlsCertificates: .*PEM/);
  });

  it('a Unix socket path as host, on either side', async () => {
    const path = '/tmp/pagewire.sock';
    expectCoded(await failure(() => MigrationTarget.listen({ image: memoryImage(), host: path, insecure: true })),
      InvalidArgumentError, 'PW_ERR_INVALID_ARGUMENT', /options\.host .*\/tmp\/pagewire\.sock/);
    expectCoded(catchSync(() => new MigrationSource({ ...sourceOptions(7000), host: path })), InvalidArgumentError,
      'PW_ERR_INVALID_ARGUMENT', /options\.host .*\/tmp\/pagewire\.sock/);
  });
});

describe('listening and connecting', () => {
  let busy: Server;
  let busyPort: number;
  beforeAll(async () => {
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    busyPort = (busy.address() as { port: number }).port;
  });
  afterAll(() => { busy.close(); });

  it('a busy port is a ListenError naming host:port, with the system error as cause', async () => {
    const error = await failure(() => MigrationTarget.listen({ image: memoryImage(), host: '127.0.0.1', port: busyPort }));
    expectCoded(error, ListenError, 'PW_ERR_LISTEN', new RegExp(`127\\.0\\.0\\.1:${busyPort}`));
    expect((error as ListenError).cause).toMatchObject({ code: 'EADDRINUSE' });
  });

  it('an address this machine does not have is a ListenError, with the system error as cause', async () => {
    // TEST-NET-1 (RFC 5737): never assigned to an interface, so bind() fails locally, no packet sent.
    const error = await failure(() => MigrationTarget.listen({ image: memoryImage(), host: '192.0.2.1', port: 0, insecure: true }));
    expectCoded(error, ListenError, 'PW_ERR_LISTEN', /192\.0\.2\.1:0/);
    expect((error as ListenError).cause).toMatchObject({ code: 'EADDRNOTAVAIL' });
  });
});

describe('hooks', () => {
  it('a throwing pause hook is a HookError naming the hook, with what it threw as cause; the target hears its code', async () => {
    const target = await MigrationTarget.listen({ image: memoryImage(), host: '127.0.0.1', port: 0 });
    const thrown = new Error('the workload would not stop');
    const resumed: string[] = [];
    const source = new MigrationSource(sourceOptions(target.address.port, {
      pause: () => { throw thrown; }, resume: () => { resumed.push('resume'); },
    }));
    const error = await failure(() => source.run());
    expectCoded(error, HookError, 'PW_ERR_HOOK', /pause hook/);
    expect((error as HookError).hook).toBe('pause');
    expect((error as HookError).cause).toBe(thrown);
    // Before READY, so the workload goes on here.
    expect(resumed).toEqual(['resume']);
    const targetError = await failure(() => target.result);
    expect(targetError).toBeInstanceOf(PeerError);
    expect((targetError as PeerError).remoteCode).toBe('PW_ERR_HOOK');
  });

  it('a deviceState hook that returns a string is an InvalidArgumentError naming the hook', async () => {
    const target = await MigrationTarget.listen({ image: memoryImage(), host: '127.0.0.1', port: 0 });
    const source = new MigrationSource(sourceOptions(target.address.port, {
      deviceState: () => 'registers' as unknown as Uint8Array,
    }));
    expectCoded(await failure(() => source.run()), InvalidArgumentError, 'PW_ERR_INVALID_ARGUMENT',
      /hooks\.deviceState must return a Uint8Array/);
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_INVALID_ARGUMENT' });
  });
});

describe('aborts keep the reason as cause', () => {
  it('a source aborted before it starts', async () => {
    const reason = new Error('operator cancelled');
    const source = new MigrationSource({ ...sourceOptions(7000), signal: AbortSignal.abort(reason) });
    const error = await failure(() => source.run());
    expectCoded(error, AbortedError, 'PW_ERR_ABORTED', /aborted/);
    expect((error as AbortedError).cause).toBe(reason);
  });

  it('a source aborted during the pre-copy, and its target aborted too', async () => {
    const targetAbort = new AbortController();
    const target = await MigrationTarget.listen({ image: memoryImage(), host: '127.0.0.1', port: 0, signal: targetAbort.signal });
    const sourceAbort = new AbortController();
    const reason = new Error('source cancelled');
    const source = new MigrationSource({ ...sourceOptions(target.address.port), signal: sourceAbort.signal });
    source.once('progress', () => sourceAbort.abort(reason));
    const error = await failure(() => source.run());
    expectCoded(error, AbortedError, 'PW_ERR_ABORTED', /aborted/);
    expect((error as AbortedError).cause).toBe(reason);
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_ABORTED' });

    const idle = await MigrationTarget.listen({ image: memoryImage(), host: '127.0.0.1', port: 0, signal: targetAbort.signal });
    const targetReason = new Error('target cancelled');
    targetAbort.abort(targetReason);
    const targetError = await failure(() => idle.result);
    expectCoded(targetError, AbortedError, 'PW_ERR_ABORTED', /aborted/);
    expect((targetError as AbortedError).cause).toBe(targetReason);
  });
});

describe('the target after its migration', () => {
  it('still reports the address it served on', async () => {
    const target = await MigrationTarget.listen({ image: memoryImage(), host: '127.0.0.1', port: 0 });
    const { port } = target.address;
    await new MigrationSource(sourceOptions(port)).run();
    await target.result;
    expect(target.address).toMatchObject({ address: '127.0.0.1', family: 'IPv4', port });
  });
});

describe('MemoryTargetImage', () => {
  it('takes { zeroed } as an option; left out, it checks the region when it opens', async () => {
    const offer = { regionSize: BYTES, pageSize: PAGE, migrationId: '00' };
    expect(new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(BYTES)), { zeroed: false }).zeroed).toBe(false);
    const blank = new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(BYTES)));
    await blank.open(offer);
    expect(blank.zeroed).toBe(true);
    const used = Buffer.alloc(BYTES);
    used[BYTES - 1] = 1;
    const dirty = new MemoryTargetImage(MemoryRegion.fromMemory(used));
    await dirty.open(offer);
    expect(dirty.zeroed).toBe(false);
    expectCoded(catchSync(() => new MemoryTargetImage(MemoryRegion.fromMemory(used), true as never)), InvalidArgumentError,
      'PW_ERR_INVALID_ARGUMENT', /options must be an object/);
  });
});

describe('FileTargetImage', () => {
  it('a directory that cannot be made durable is a StorageError, with the system error as cause', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pagewire-contract-'));
    const image = new FileTargetImage(join(dir, 'out.img'));
    await image.open({ regionSize: BYTES, pageSize: PAGE, migrationId: '00' });
    // The temp file stays open and writable; only its directory is gone.
    rmSync(dir, { recursive: true, force: true });
    const error = await failure(() => image.persist());
    expectCoded(error, StorageError, 'PW_ERR_STORAGE', new RegExp(dir));
    expect((error as StorageError).cause).toMatchObject({ code: 'ENOENT' });
    image.discard();
  });
});

function catchSync(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}
