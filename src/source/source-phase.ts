// The source's one explicit state (docs/PROTOCOL.md has the state table). The modules of a run read it
// (a resume is only for the pre-copy, an abort names where it struck) and move it on; the orchestrator
// hears each change to emit it.
export type SourcePhase = 'connecting' | 'precopy' | 'stop-and-copy' | 'awaiting-ready' | 'handed-over' | 'completed' | 'failed';

export class PhaseState {
  private phase: SourcePhase = 'connecting';

  constructor(private readonly changed: (phase: SourcePhase) => void) {}

  get current(): SourcePhase {
    return this.phase;
  }

  enter(phase: SourcePhase): void {
    this.phase = phase;
    this.changed(phase);
  }
}
