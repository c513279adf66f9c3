// A lazy restore, as Firecracker restores memory: each region's page area is mapped MAP_PRIVATE from
// the snapshot, so the workload starts at once and a page is read from the file only when first
// touched; its writes stay in this process. N lazy restores of one snapshot share its unchanged pages
// through the page cache. An incremental snapshot maps its full snapshot's pages and reads on top of
// them the pages each later file holds (only those). Opening checks every file's digest and header
// (the hash tables are read only by verify(), which checks every page against them, when asked).
import { NativeUnavailableError, SnapshotCorruptError } from '../errors.js';
import { MemoryRegion } from '../memory/region.js';
import { binding } from '../native/engine.js';
import { readExactly } from './snapshot-digest.js';
import { SnapshotChain } from './snapshot-file.js';
import { isPresent } from './snapshot-format.js';
import { verifiedWindows } from './snapshot-restore.js';

const WINDOW_BYTES = 8 * 1024 * 1024;

export interface RestoredSnapshot {
  /** The snapshot's id. */
  readonly id: string;
  /** Each region, in the snapshot's order, ready to use. */
  readonly regions: MemoryRegion[];
  /** The device state saved with the snapshot. */
  readonly deviceState: Buffer;
  /** Whether the regions are private mappings that load on touch (false without the addon: read and verified whole). */
  readonly lazy: boolean;
  /** Checks every page against the snapshot's hash table (reading them all); throws SnapshotCorruptError on a mismatch. */
  verify(): void;
  /** Unmaps the regions (once no view of them is reachable). */
  close(): void;
}

export interface OpenSnapshotOptions {
  /**
   * Let the kernel read ahead around each page touched, as for a file read in order (default false:
   * only the page touched is read, so that a restore touching few pages loads few, however many run).
   */
  readAhead?: boolean;
}

/**
 * Opens a snapshot's state as regions in this process, lazily where the addon can map it privately. The
 * chain's files stay open until close(): verify() reads the hash tables of the very files opened.
 */
export function openSnapshot(path: string, options: OpenSnapshotOptions = {}): RestoredSnapshot {
  const chain = SnapshotChain.open(path);
  const { top, layers } = chain;
  let regions: MemoryRegion[] = [];
  let lazy = true;
  try {
    try {
      for (const [index, area] of top.header.regions.entries()) {
        const mapping = binding().mapFilePrivate(layers[0]!.path, area.pagesOffset, area.byteLength, options.readAhead === true);
        const region = MemoryRegion.fromPrivateMapping(mapping, area.pageSize);
        regions.push(region);
        for (const layer of layers.slice(1)) readPresentPages(layer.fd, layer.path, layer.present[index]!, area, layer.header.regions[index]!.pagesOffset, region);
      }
    } catch (error) {
      if (!(error instanceof NativeUnavailableError)) throw error;
      for (const region of regions) region.close();
      // Without the addon nothing maps privately: the state is read whole, every page verified.
      lazy = false;
      regions = top.header.regions.map((area, index) => {
        const region = MemoryRegion.fromMemory(new SharedArrayBuffer(area.byteLength), { pageSize: area.pageSize });
        for (const { window, firstPage } of verifiedWindows(chain, index)) region.view(firstPage * area.pageSize, window.length).set(window);
        return region;
      });
    }
    const deviceState = top.deviceState();
    return {
      id: top.id, regions, deviceState, lazy,
      // The tables are read now: the lazy start needed none of them.
      verify: () => regions.forEach((region, index) => verifyRegion(region, top.hashes[index]!, top.path, index)),
      close: () => {
        regions.forEach((region) => region.close());
        chain.close();
      },
    };
  } catch (error) {
    for (const region of regions) region.close();
    chain.close();
    throw error;
  }
}

/** Reads the pages a later file of the chain holds into the region, a run of neighbours at a time. */
function readPresentPages(fd: number, name: string, present: Uint32Array, area: { pageSize: number; pageCount: number },
  pagesOffset: number, region: MemoryRegion): void {
  const { pageSize, pageCount } = area;
  for (let page = 0; page < pageCount;) {
    if (!isPresent(present, page)) { page++; continue; }
    let end = page + 1;
    while (end < pageCount && isPresent(present, end) && (end - page) * pageSize < WINDOW_BYTES) end++;
    const view = region.view(page * pageSize, (end - page) * pageSize);
    readExactly(fd, view.length, pagesOffset + page * pageSize, name, Buffer.from(view.buffer, view.byteOffset, view.length));
    page = end;
  }
}

function verifyRegion(region: MemoryRegion, table: BigUint64Array, name: string, index: number): void {
  const { pageSize, pageCount } = region;
  const windowPages = Math.max(1, Math.floor(WINDOW_BYTES / pageSize));
  const hashes = new BigUint64Array(windowPages);
  for (let first = 0; first < pageCount; first += windowPages) {
    const count = Math.min(windowPages, pageCount - first);
    binding().hashPages(region.view(first * pageSize, count * pageSize), pageSize, 0, count, hashes, 0);
    for (let i = 0; i < count; i++) {
      if (hashes[i] !== table[first + i]) throw new SnapshotCorruptError(`${name}: page ${first + i} of region ${index} does not match its hash`);
    }
  }
}
