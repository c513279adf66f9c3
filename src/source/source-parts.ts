// What the modules of one source run share. The orchestrator (src/migration/source.ts) makes each part
// once, and hands the set to the resume policy and the switch-over, which act on all of them.
import type { SourceSummary } from '../migration/metrics.js';
import type { SourceSettings } from '../migration/source-options.js';
import type { ConnectionSet } from './connection-set.js';
import type { RoundSender } from './round-sender.js';
import type { TrackedRegion } from './tracked-regions.js';
import type { PhaseState } from './source-phase.js';
import type { WorkloadControl } from './workload-control.js';

export interface SourceParts {
  settings: SourceSettings;
  connections: ConnectionSet;
  sender: RoundSender;
  workload: WorkloadControl;
  /** The regions moved, in wire order, each with its tracker and sent hashes. */
  regions: TrackedRegion[];
  /** The run's figures, which become its summary. */
  summary: SourceSummary;
  phases: PhaseState;
}
