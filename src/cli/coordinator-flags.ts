// --etcd URL --name NAME, shared by `replicate` and `standby`: the coordinator that decides which copy of
// a workload may run. Without it, each side says what it cannot tell apart.
import { InvalidArgumentError } from '../errors.js';
import { EtcdClient } from '../coordinator/etcd-client.js';
import { optionalString, type Flags } from './args.js';

export const COORDINATOR_FLAGS = { etcd: 'string', name: 'string' } as const;

export interface Coordinator {
  client: EtcdClient;
  name: string;
}

const NAME_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

export function readCoordinatorFlags(flags: Flags): Coordinator | undefined {
  const url = optionalString(flags, 'etcd');
  const name = optionalString(flags, 'name');
  if (url === undefined && name === undefined) return undefined;
  if (url === undefined || name === undefined) throw new InvalidArgumentError('--etcd and --name go together: the coordinator, and the workload\'s name in it');
  if (!NAME_PATTERN.test(name)) throw new InvalidArgumentError(`--name '${name}': use letters, digits, '.', '_' or '-' (at most 128)`);
  return { client: new EtcdClient(url), name };
}
