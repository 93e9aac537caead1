// The sample backends the default config/ routes to, started by `npm start` (--with-sample-backends).
// The ports are the ones config/*.yaml and the README name; keep the three in agreement.

import { startHttpbin, type HttpbinServer } from './httpbin';
import { startTcpEcho, type TcpEchoServer } from './tcp-echo';

export const SAMPLE_HOST = '127.0.0.1';

export const SAMPLE_PORTS = {
  httpbin: 18000,
  helloworldV1: 18001,
  helloworldV2: 18002,
  tcpEchoV1: 19000,
  tcpEchoV2: 19001,
} as const;

export type SamplePorts = { readonly [K in keyof typeof SAMPLE_PORTS]: number };

export interface SampleBackends {
  /** One line per backend, for the startup log. */
  describe(): string[];
  close(): Promise<void>;
}

/** Start every sample backend; if one cannot start (port in use), the others are closed again. */
export async function startSampleBackends(opts: { host?: string; ports?: SamplePorts } = {}): Promise<SampleBackends> {
  const host = opts.host ?? SAMPLE_HOST;
  const ports = opts.ports ?? SAMPLE_PORTS;
  const starts: Promise<HttpbinServer | TcpEchoServer>[] = [
    startHttpbin({ port: ports.httpbin, host, name: 'httpbin' }),
    startHttpbin({ port: ports.helloworldV1, host, name: 'helloworld-v1' }),
    startHttpbin({ port: ports.helloworldV2, host, name: 'helloworld-v2' }),
    startTcpEcho({ port: ports.tcpEchoV1, host, prefix: 'one' }),
    startTcpEcho({ port: ports.tcpEchoV2, host, prefix: 'two' }),
  ];
  const results = await Promise.allSettled(starts);
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const closeAll = async (): Promise<void> => void (await Promise.all(started.map((s) => s.close())));
  if (failed) {
    await closeAll();
    throw failed.reason;
  }
  return {
    describe: () =>
      started.map((s) =>
        'name' in s ? `sample backend ${s.name} (http) on ${s.url}` : `sample backend tcp-echo "${s.prefix}" (tcp) on ${s.host}:${s.port}`,
      ),
    close: closeAll,
  };
}
