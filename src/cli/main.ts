#!/usr/bin/env node
// pagewire's command line: receive on the target, send on the source, demo for both on one machine.
import { InvalidArgumentError, asPagewireError } from '../errors.js';
import { DEMO_USAGE, demoCommand } from './demo.js';
import { RECEIVE_USAGE, receiveCommand } from './receive.js';
import { printJson } from './output.js';
import { SEND_USAGE, sendCommand } from './send.js';

const USAGE = `usage:\n  ${RECEIVE_USAGE}\n  ${SEND_USAGE}\n  ${DEMO_USAGE}\n`;
const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  receive: receiveCommand, send: sendCommand, demo: demoCommand,
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  const run = COMMANDS[command];
  if (!run) throw new InvalidArgumentError(`unknown command '${command}' (commands: receive, send, demo)`);
  return run(rest);
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
