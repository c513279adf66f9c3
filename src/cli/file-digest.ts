// The region digest of an image file, as FINAL carries it and the JSON reports it: XXH64 over the
// little-endian array of every page's XXH64.
import { formatDigest, regionDigest } from '../codec/page-hashes.js';
import { filePageHashes } from '../memory/file-page-hashes.js';

export interface FileDigest {
  digest: string;
  pageSize: number;
  pagesTotal: number;
}

export function fileDigest(path: string, pageSize: number): FileDigest {
  const hashes = filePageHashes(path, pageSize);
  return { digest: formatDigest(regionDigest(hashes)), pageSize, pagesTotal: hashes.length };
}
