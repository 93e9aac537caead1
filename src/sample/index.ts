// The sample backends the default config/ routes to, started by `npm start` (--with-sample-backends).

import { startHttpbin } from './httpbin';
import { startTcpEcho } from './tcp-echo';

export const SAMPLE_PORTS = {
  httpbin: 18000,
  helloworldV1: 18001,
  helloworldV2: 18002,
  tcpEchoV1: 19000,
  tcpEchoV2: 19001,
} as const;

export async function startSampleBackends(): Promise<{ describe(): string[]; close(): Promise<void> }> {
  const host = '127.0.0.1';
  const started = [
    await startHttpbin({ port: SAMPLE_PORTS.httpbin, host, name: 'httpbin' }),
    await startHttpbin({ port: SAMPLE_PORTS.helloworldV1, host, name: 'helloworld-v1' }),
    await startHttpbin({ port: SAMPLE_PORTS.helloworldV2, host, name: 'helloworld-v2' }),
  ];
  const echoes = [
    await startTcpEcho({ port: SAMPLE_PORTS.tcpEchoV1, host, prefix: 'one' }),
    await startTcpEcho({ port: SAMPLE_PORTS.tcpEchoV2, host, prefix: 'two' }),
  ];
  return {
    describe: () => [
      ...started.map((s) => `sample backend ${s.name} on ${s.url}`),
      `sample backend tcp-echo v1 ("one") on ${host}:${SAMPLE_PORTS.tcpEchoV1}, v2 ("two") on ${host}:${SAMPLE_PORTS.tcpEchoV2}`,
    ],
    close: async () => {
      await Promise.all([...started.map((s) => s.close()), ...echoes.map((e) => e.close())]);
    },
  };
}
