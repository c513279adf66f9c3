#!/usr/bin/env node
// pagewire's command line: receive on the target, send on the source, replicate and standby to keep a
// workload safe on a second host, digest to check an image, demo for both ends on one machine, qemu to
// move a running QEMU guest; snapshot, restore, inspect and clone keep a workload's state in files.
import { InvalidArgumentError, asPagewireError } from '../errors.js';
import { DEMO_USAGE, demoCommand } from './demo.js';
import { DIGEST_USAGE, digestCommand } from './digest.js';
import { RECEIVE_USAGE, receiveCommand } from './receive.js';
import { printJson } from './output.js';
import { QEMU_USAGE, qemuCommand } from './qemu.js';
import { REPLICATE_USAGE, replicateCommand } from './replicate.js';
import { STANDBY_USAGE, standbyCommand } from './standby.js';
import { SEND_USAGE, sendCommand } from './send.js';
import { SNAPSHOT_USAGE, snapshotCommand } from './snapshot.js';
import { RESTORE_USAGE, restoreCommand } from './restore.js';
import { INSPECT_USAGE, inspectCommand } from './inspect.js';
import { CLONE_USAGE, cloneCommand } from './clone.js';

interface Command {
  usage: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  receive: { usage: RECEIVE_USAGE, run: receiveCommand },
  send: { usage: SEND_USAGE, run: sendCommand },
  replicate: { usage: REPLICATE_USAGE, run: replicateCommand },
  standby: { usage: STANDBY_USAGE, run: standbyCommand },
  digest: { usage: DIGEST_USAGE, run: digestCommand },
  demo: { usage: DEMO_USAGE, run: demoCommand },
  qemu: { usage: QEMU_USAGE, run: qemuCommand },
  snapshot: { usage: SNAPSHOT_USAGE, run: snapshotCommand },
  restore: { usage: RESTORE_USAGE, run: restoreCommand },
  inspect: { usage: INSPECT_USAGE, run: inspectCommand },
  clone: { usage: CLONE_USAGE, run: cloneCommand },
};
const USAGE = `usage:\n${Object.values(COMMANDS).map((c) => `  ${c.usage}\n`).join('')}`;
const isHelp = (arg: string | undefined) => arg === '--help' || arg === '-h' || arg === 'help';

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || isHelp(name)) {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) throw new InvalidArgumentError(`unknown command '${name}' (commands: ${Object.keys(COMMANDS).join(', ')})`);
  if (rest.some((arg) => arg === '--help' || arg === '-h')) {
    process.stdout.write(`usage: ${command.usage}\n`);
    return 0;
  }
  return command.run(rest);
}

const argv = process.argv.slice(2);
main(argv).then((code) => {
  process.exitCode = code;
}, (error: unknown) => {
  const failure = asPagewireError(error);
  process.stderr.write(`pagewire: ${failure.message} (${failure.code})\n`);
  // The --json contract holds for failures before a migration even starts (bad image, busy port).
  if (argv.includes('--json')) printJson({ status: 'failed', error: failure.message, errorCode: failure.code });
  process.exitCode = failure instanceof InvalidArgumentError ? 2 : 1;
});
