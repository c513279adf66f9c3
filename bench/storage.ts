// Where the bench's files live, by storage class: 'shm' is /dev/shm (tmpfs: memory), 'disk' a
// directory on a real filesystem (os.tmpdir() unless that is memory-backed too, or --disk-dir). Each
// run works in a fresh directory of its own under each, removed at the end.
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type FileStorage = 'shm' | 'disk';

export interface StorageDir {
  /** The directory the bench was given or chose. */
  root: string;
  /** This run's own directory under it. */
  dir: string;
  /** The filesystem, from statfs (e.g. tmpfs, ext4). */
  fsType: string;
}

const SHM_ROOT = '/dev/shm';
/** statfs f_type values (linux/magic.h) of the filesystems a bench machine is likely to have. */
const FS_TYPES: Record<number, string> = {
  0x01021994: 'tmpfs', 0x858458f6: 'ramfs', 0xef53: 'ext4', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x794c7630: 'overlayfs',
  0x2fc12fc1: 'zfs', 0x6969: 'nfs', 0xf2f52010: 'f2fs',
};
const MEMORY_FS = new Set(['tmpfs', 'ramfs']);

function fsTypeOf(path: string): string {
  const type = statfsSync(path).type;
  return FS_TYPES[type] ?? `0x${type.toString(16)}`;
}

/**
 * The run's directories for the storages asked for. diskRoot: --disk-dir, or undefined for os.tmpdir()
 * (fallbackDiskRoot when that is memory-backed). Throws when a storage is not what its name says.
 */
export function prepareStorage(wanted: Set<FileStorage>, diskRoot: string | undefined, fallbackDiskRoot: string): Partial<Record<FileStorage, StorageDir>> {
  const dirs: Partial<Record<FileStorage, StorageDir>> = {};
  try {
    if (wanted.has('shm')) {
      let fsType: string;
      try {
        fsType = fsTypeOf(SHM_ROOT);
      } catch (error) {
        throw new Error(`the -shm and -mem scenarios need ${SHM_ROOT}: ${(error as Error).message}`);
      }
      if (!MEMORY_FS.has(fsType)) throw new Error(`${SHM_ROOT} is ${fsType}, not tmpfs: the -shm scenarios would not measure memory`);
      dirs.shm = { root: SHM_ROOT, dir: mkdtempSync(join(SHM_ROOT, 'pagewire-bench-')), fsType };
    }
    if (wanted.has('disk')) {
      let root = diskRoot ?? tmpdir();
      if (diskRoot === undefined && MEMORY_FS.has(fsTypeOf(root))) root = fallbackDiskRoot;
      const fsType = fsTypeOf(root);
      if (MEMORY_FS.has(fsType)) throw new Error(`--disk-dir ${root} is on ${fsType}, which is memory: name a directory on a disk`);
      dirs.disk = { root, dir: mkdtempSync(join(root, 'pagewire-bench-')), fsType };
    }
    return dirs;
  } catch (error) {
    removeStorage(dirs);
    throw error;
  }
}

export function removeStorage(dirs: Partial<Record<FileStorage, StorageDir>>): void {
  for (const d of Object.values(dirs)) rmSync(d.dir, { recursive: true, force: true });
}
