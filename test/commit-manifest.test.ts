// Several image files committed as one (src/target/commit-manifest.ts): whatever point a crash stops the
// renames at, once the manifest is durable rollForward() leaves every file new; before it, every file
// keeps its old bytes.
import { existsSync, mkdirSync, readFileSync, renameSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileTargetImage, StorageError } from '../dist/src/index.js';
import { applyCommitManifest, commitManifestPath, rollForward, writeCommitManifest } from '../dist/src/target/commit-manifest.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** Three files holding 'old', and a temp beside each holding 'new'. */
function filesAndTemps(name: string) {
  const renames = ['ram', 'disk', 'device'].map((part) => {
    const to = join(tmp.dir, `${name}-${part}.img`);
    const from = join(tmp.dir, `.${name}-${part}.img.tmp`);
    writeFileSync(to, `old ${part}`);
    writeFileSync(from, `new ${part}`);
    return { from, to };
  });
  const contents = () => renames.map(({ to }) => readFileSync(to, 'utf8'));
  return { renames, contents };
}

describe('a commit of several files', () => {
  it('renames every file and leaves no manifest', async () => {
    const { renames, contents } = filesAndTemps('whole');
    await applyCommitManifest(await writeCommitManifest(renames), renames);
    expect(contents()).toEqual(['new ram', 'new disk', 'new device']);
    expect(existsSync(commitManifestPath(renames[0]!.to))).toBe(false);
    expect(await rollForward(renames[0]!.to)).toEqual([]);
  });

  it('is completed by rollForward wherever a crash stopped the renames once the manifest was durable', async () => {
    for (const renamedBeforeCrash of [0, 1, 2, 3]) {
      const { renames, contents } = filesAndTemps(`crash${renamedBeforeCrash}`);
      await writeCommitManifest(renames);
      for (const { from, to } of renames.slice(0, renamedBeforeCrash)) renameSync(from, to);
      expect(await rollForward(renames[0]!.to)).toEqual(renames);
      expect(contents()).toEqual(['new ram', 'new disk', 'new device']);
      expect(existsSync(commitManifestPath(renames[0]!.to))).toBe(false);
    }
  });

  it('leaves every file old when the crash came before the manifest was written', async () => {
    const { renames, contents } = filesAndTemps('early');
    expect(await rollForward(renames[0]!.to)).toEqual([]);
    expect(contents()).toEqual(['old ram', 'old disk', 'old device']);
  });

  it('refuses a damaged manifest with a StorageError and renames nothing', async () => {
    const { renames, contents } = filesAndTemps('damaged');
    writeFileSync(commitManifestPath(renames[0]!.to), '{"pagewireCommit":1,"renames":[{"from":');
    await expect(rollForward(renames[0]!.to)).rejects.toThrow(StorageError);
    expect(contents()).toEqual(['old ram', 'old disk', 'old device']);
  });

  it('FileTargetImage.commitAll: a rename that fails leaves the manifest, says so, and the next open() completes it', async () => {
    const ram = join(tmp.dir, 'images-ram.img');
    const disk = join(tmp.dir, 'images-disk.img');
    writeFileSync(ram, 'old ram');
    mkdirSync(disk); // renaming a file over a directory fails
    const offer = { regionSize: 8 * 4096, pageSize: 4096, migrationId: 'ab'.repeat(16), regions: 2 };
    const images = [new FileTargetImage(ram), new FileTargetImage(disk)];
    for (const [region, image] of images.entries()) await image.open({ ...offer, region });
    for (const image of images) await image.persist();
    await expect(FileTargetImage.commitAll(images)).rejects.toThrow(/completes when this target starts again \(manifest .*pagewire-commit\)/);
    expect(await images[1]!.keepInDoubt()).toMatch(/once the commit manifest .* is rolled forward/);
    images[1]!.discard(); // must not delete the temp the manifest still renames
    rmdirSync(disk);
    // The next migration's image opens only once the interrupted commit is complete.
    const next = new FileTargetImage(ram);
    await next.open({ ...offer, migrationId: 'cd'.repeat(16), region: 0, regions: 1 });
    next.discard();
    expect(existsSync(commitManifestPath(ram))).toBe(false);
    expect(statSync(ram).size).toBe(offer.regionSize);
    expect(statSync(disk).size).toBe(offer.regionSize);
  });
});
