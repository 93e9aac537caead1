// Where the config comes from: files (src/sources/files.ts) or the Kubernetes API
// (src/sources/kubernetes.ts). Both produce the same validated ResourceSet for compile; they differ
// in what an error costs: a file change with an error is rejected whole, a Kubernetes object with
// an error is left out alone (`rejected`) and the rest applies.

import type { Logger } from 'pino';
import { loadConfig, type LoadedConfig, type RejectedObject } from '../config/pipeline';
import { FileWatcher } from './files';

export interface SourceLoad extends LoadedConfig {
  /** Per-object mode only: objects left out because of their errors. */
  readonly rejected?: readonly RejectedObject[];
}

export interface ConfigSource {
  readonly kind: 'files' | 'kubernetes';
  /** Begin watching; `onChange` asks for a reload (already debounced by the source). */
  start(onChange: (reason: string) => void): void;
  /** Resolves once everything the source reads has been read once (readiness waits for it). */
  whenSynced(): Promise<void>;
  /** The current config, loaded and validated. */
  load(): Promise<SourceLoad>;
  stop(): Promise<void>;
  /** For /config_dump. */
  describe(): Record<string, unknown>;
}

/** The file source: YAML files and directories, all-or-nothing per change, watched unless told not to. */
export class FileSource implements ConfigSource {
  readonly kind = 'files';
  private watcher: FileWatcher | undefined;

  constructor(private readonly paths: readonly string[], private readonly watch: boolean, private readonly log: Logger) {}

  start(onChange: (reason: string) => void): void {
    if (!this.watch) return;
    this.watcher = new FileWatcher(this.paths, () => onChange('file change'), this.log);
    this.watcher.start();
  }

  whenSynced(): Promise<void> {
    return Promise.resolve();
  }

  load(): Promise<LoadedConfig> {
    return loadConfig(this.paths);
  }

  async stop(): Promise<void> {
    this.watcher?.stop();
  }

  describe(): Record<string, unknown> {
    return { source: 'files', configPaths: this.paths };
  }
}
