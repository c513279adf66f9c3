// The target's one state. What it is doing decides which first frames get a hearing (a HELLO, a JOIN, a
// resume HELLO), what stop() interrupts, and the public phase; each kind carries only what it needs, so
// a JOIN registry without a migration, or a resume without a suspended or resumable session, cannot be
// written down. MigrationTarget.enter() is the one place the state changes.
import type { PagewireError } from '../errors.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import type { Hello } from '../wire/messages.js';
import type { JoinRegistry } from './join-registry.js';

export type TargetPhase = 'listening' | 'receiving' | 'suspended' | 'ready-sent' | 'committing' | 'completed' | 'failed';

/** Fails what the migration is waiting for: stop(), or a resume that retires the connections. */
export type Interrupt = (error: PagewireError) => void;

/** A resume HELLO that proved the session secret, on its new control connection. */
export interface ResumeRequest {
  connection: FramedConnection;
  hello: Hello;
}

/** What a resume HELLO must name (the migration's first HELLO) and prove (the session secret). */
export interface ResumableSession {
  hello: Hello;
  secret: Buffer;
}

export type TargetState =
  /** Waiting for a source: the next HELLO may begin a migration. */
  | { kind: 'listening' }
  /** A HELLO was accepted and its image opens; a stop() meanwhile is kept, to end the migration once it is open. */
  | { kind: 'opening'; stoppedBy?: PagewireError }
  /** WELCOME (and after a resume, HELD) on its way: neither a JOIN nor a resume is expected yet. */
  | { kind: 'welcoming'; interrupt: Interrupt }
  /** Waiting for the extra streams WELCOME granted. */
  | { kind: 'joining'; joins: JoinRegistry; interrupt: Interrupt }
  /**
   * Rounds arriving. A resume HELLO may retire this connection set while `resumable()` (pre-copy only);
   * one that came before this side noticed the old connections were gone waits in `earlyResume`.
   */
  | { kind: 'receiving'; session: ResumableSession; resumable(): boolean; earlyResume?: ResumeRequest; interrupt: Interrupt }
  /** The connections broke during the pre-copy: waiting for the source to resume. */
  | { kind: 'suspended'; session: ResumableSession; resume(request: ResumeRequest): void; interrupt: Interrupt }
  | { kind: 'ready-sent'; interrupt: Interrupt }
  /** GO received: handed over, so nothing interrupts the commit. */
  | { kind: 'committing' }
  /** The migration failed: its streams stop and the source is told why. */
  | { kind: 'failing'; interrupt: Interrupt }
  | { kind: 'completed' }
  | { kind: 'failed' }
  /** Nothing more is served (after the one migration, or stop()). */
  | { kind: 'ended' };

/** The phase a state announces; the others keep the one before them (the phase is `listening` from HELLO through the joins). */
export function phaseOf(state: TargetState): TargetPhase | undefined {
  switch (state.kind) {
    case 'listening': case 'receiving': case 'suspended': case 'ready-sent': case 'committing': case 'completed': case 'failed':
      return state.kind;
    default:
      return undefined;
  }
}

/** What stop() fails in this state (nothing once handed over, or when nothing runs). */
export function interruptOf(state: TargetState): Interrupt | undefined {
  return 'interrupt' in state ? state.interrupt : undefined;
}
