// `pagewire inspect`: a snapshot's header, its chain, and a verification of every file of it (every
// page against its hash, and no data where a file holds no page).
import { SnapshotChain } from '../snapshot/snapshot-file.js';
import { verifyFile } from '../snapshot/snapshot-restore.js';
import { formatDigest } from '../codec/page-hashes.js';
import { oneFileThenFlags, parseFlags } from './args.js';
import { printJson, printTable } from './output.js';

export const INSPECT_USAGE = 'pagewire inspect SNAP [--json]';

export async function inspectCommand(argv: string[]): Promise<number> {
  const { file, flags: flagArgs } = oneFileThenFlags(argv, 'snapshot to inspect', INSPECT_USAGE);
  const flags = parseFlags(flagArgs, { json: 'boolean' });
  const chain = SnapshotChain.open(file);
  try {
    // Newest first, as an operator reads a chain: this snapshot, then what it stands on.
    const layers = [...chain.layers].reverse().map((layer) => {
      const { header } = layer;
      return {
        path: layer.path, id: layer.id, parentId: layer.incremental ? header.parentId.toString('hex') : null,
        parentPath: layer.incremental ? header.parentPath : null, createdAt: new Date(header.createdAtMs).toISOString(),
        fileSize: layer.fileSize, fileBytes: layer.fileBytes, deviceStateBytes: header.deviceStateLength, digest: layer.digest.toString('hex'),
        regions: header.regions.map((r) => ({ pageSize: r.pageSize, byteLength: r.byteLength, pages: r.pageCount, presentPages: r.presentPages, digest: formatDigest(r.digest) })),
        verifiedPages: verifyFile(layer),
      };
    });
    if (flags.has('json')) {
      printJson({ status: 'verified', id: chain.top.id, version: chain.top.header.version, chain: layers });
    } else {
      for (const layer of layers) {
        process.stdout.write(`snapshot ${layer.id}${layer.parentId ? ` (incremental on ${layer.parentId}, ${layer.parentPath})` : ' (full)'}\n`);
        printTable([
          ['file', `${layer.path}: ${layer.fileSize} bytes, ${layer.fileBytes} allocated`], ['created', layer.createdAt],
          ...layer.regions.map((r, i): [string, string] => [`region ${i}`, `${r.byteLength} bytes in pages of ${r.pageSize}, ${r.presentPages} present, digest ${r.digest}`]),
          ['device state', `${layer.deviceStateBytes} bytes`], ['verified', `${layer.verifiedPages} pages`],
        ]);
      }
      process.stdout.write('verified: every file whole, every page matches its hash\n');
    }
    return 0;
  } finally {
    chain.close();
  }
}
