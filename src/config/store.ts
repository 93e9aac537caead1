// The only place the live snapshot is swapped. Readers take `store.current` once per decision and
// never hold on to it across an await; the snapshot itself is never mutated after publication.

import type { Snapshot } from './snapshot';

export class ConfigStore {
  private snapshot: Snapshot;
  private readonly listeners: ((next: Snapshot, previous: Snapshot) => void)[] = [];

  constructor(initial: Snapshot) {
    this.snapshot = initial;
  }

  get current(): Snapshot {
    return this.snapshot;
  }

  /** Publish a fully prepared snapshot: one assignment, then the subscribers. */
  swap(next: Snapshot): void {
    const previous = this.snapshot;
    this.snapshot = next;
    for (const l of this.listeners) l(next, previous);
  }

  onSwap(listener: (next: Snapshot, previous: Snapshot) => void): void {
    this.listeners.push(listener);
  }
}
