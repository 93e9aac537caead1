// `pilot-agent`: meshgate's compatibility shim for the two pilot-agent commands Istio runbooks and
// hooks run inside the proxy container, so they keep working in a meshgate container:
//
//   pilot-agent request GET stats                 (Istio: "Makes an HTTP request to the Envoy admin API")
//   pilot-agent request POST 'logging?level=debug'
//   pilot-agent wait                              (the postStart hook: "Waits until the Envoy proxy is ready")
//
// It behaves as Istio's pilot-agent does (pilot/cmd/pilot-agent/app/request.go and wait.go): the same
// flags, defaults, allow-list of local ports, output and exit codes. Differences: the admin and status
// ports default to MESHGATE_ADMIN_PORT / MESHGATE_STATUS_PORT when the container sets them, and the
// ports those variables (and MESHGATE_AGENT_PORT) name are allowed too. `request` must print nothing
// but the response body on stdout: istioctl parses it (as JSON for config_dump).
//
// bin/pilot-agent runs main(); the image links it onto PATH (Dockerfile). It is deliberately not in
// package.json `bin`, where it would shadow a real Istio install.

import http from 'node:http';
import { asError } from './errors';

/** The ports Istio's `pilot-agent request --debug-port` accepts. */
export const ISTIO_ALLOWED_PORTS: readonly number[] = [15000, 15004, 15020, 15021];
/** The env variables naming meshgate's own local ports, which `--debug-port` may also name. */
export const PORT_ENV_VARS: readonly string[] = ['MESHGATE_ADMIN_PORT', 'MESHGATE_STATUS_PORT', 'MESHGATE_AGENT_PORT'];

export const DEFAULT_ADMIN_PORT = 15000;
export const DEFAULT_STATUS_PORT = 15021;
/** `request`'s overall timeout (Istio's admin client: 60 s). */
export const REQUEST_TIMEOUT_MS = 60_000;

export type Env = Readonly<Record<string, string | undefined>>;

/** A bad command line: printed as `Error: <message>` with a pointer to --help, exit 1. */
export class UsageError extends Error {}

export interface RequestCommand {
  readonly kind: 'request';
  readonly method: string;
  readonly path: string;
  /** '' when no body was given. */
  readonly body: string;
  readonly port: number;
}

export interface WaitCommand {
  readonly kind: 'wait';
  readonly timeoutSeconds: number;
  readonly requestTimeoutMillis: number;
  readonly periodMillis: number;
  readonly url: string;
}

export interface HelpCommand {
  readonly kind: 'help';
  readonly topic: 'root' | 'request' | 'wait';
}

export type Command = RequestCommand | WaitCommand | HelpCommand;

/** A port from an env variable: an integer 1..65535; undefined when unset, empty or not a port. */
export function envPort(env: Env, name: string): number | undefined {
  const raw = env[name]?.trim();
  if (!raw || !/^\d+$/.test(raw)) return undefined;
  const n = Number(raw);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** `--debug-port`'s default: the admin port the container's env names, else Envoy's 15000. */
export function defaultDebugPort(env: Env): number {
  return envPort(env, 'MESHGATE_ADMIN_PORT') ?? DEFAULT_ADMIN_PORT;
}

/** `wait --url`'s default: /healthz/ready on the status port the container's env names, else 15021. */
export function defaultReadyUrl(env: Env): string {
  return `http://localhost:${envPort(env, 'MESHGATE_STATUS_PORT') ?? DEFAULT_STATUS_PORT}/healthz/ready`;
}

/** The ports `request --debug-port` may name, sorted: Istio's list plus the ports meshgate's env names. */
export function allowedPorts(env: Env): number[] {
  const ports = new Set(ISTIO_ALLOWED_PORTS);
  for (const name of PORT_ENV_VARS) {
    const p = envPort(env, name);
    if (p !== undefined) ports.add(p);
  }
  return [...ports].sort((a, b) => a - b);
}

/** Istio's refusal, with the list formatted as Go prints a slice: `[15000 15004 15020 15021]`. */
export function checkDebugPort(port: number, env: Env): void {
  const allowed = allowedPorts(env);
  if (!allowed.includes(port)) throw new Error(`debug port ${port} is not in allowed list [${allowed.join(' ')}]`);
}

/**
 * The URL `request` asks: http://localhost:PORT/ and the path with one leading "/" removed, so
 * `stats` and `/stats` are the same request; a query string is kept.
 */
export function requestUrl(port: number, path: string): URL {
  const rest = path.startsWith('/') ? path.slice(1) : path;
  return new URL(`http://localhost:${port}/${rest}`);
}

/** Where to connect for a URL: `localhost` is 127.0.0.1 (meshgate's admin binds only that). */
export function connectTarget(url: URL): { host: string; port: number } {
  let host = url.hostname;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host.toLowerCase() === 'localhost') host = '127.0.0.1';
  return { host, port: url.port ? Number(url.port) : 80 };
}

// ---- command line ----

type FlagKind = 'int' | 'port' | 'string';
const COMMAND_FLAGS: Readonly<Record<'request' | 'wait', Readonly<Record<string, FlagKind>>>> = {
  request: { 'debug-port': 'port' },
  wait: { timeoutSeconds: 'int', requestTimeoutMillis: 'int', periodMillis: 'int', url: 'string' },
};
const VALUE_FLAGS = new Set(Object.values(COMMAND_FLAGS).flatMap((f) => Object.keys(f)));
const COMMANDS = ['request', 'wait', 'help'];

interface Split {
  readonly flags: Map<string, string>;
  readonly positionals: string[];
  readonly help: boolean;
}

/** pflag-style: `--name value`, `--name=value`, `-h`/`--help`, `--` ends the flags; flags go anywhere. */
function splitFlags(tokens: readonly string[], spec: Readonly<Record<string, FlagKind>>): Split {
  const flags = new Map<string, string>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!;
    if (tok === '--') {
      positionals.push(...tokens.slice(i + 1));
      break;
    }
    if (tok === '-h' || tok === '--help' || tok === '--help=true') {
      help = true;
      continue;
    }
    if (tok.startsWith('--')) {
      const eq = tok.indexOf('=');
      const name = eq < 0 ? tok.slice(2) : tok.slice(2, eq);
      if (!(name in spec)) throw new UsageError(`unknown flag: --${name}`);
      let value: string;
      if (eq >= 0) value = tok.slice(eq + 1);
      else if (i + 1 < tokens.length) value = tokens[++i]!;
      else throw new UsageError(`flag needs an argument: --${name}`);
      flags.set(name, value);
      continue;
    }
    if (tok.startsWith('-') && tok.length > 1) throw new UsageError(`unknown shorthand flag: '${tok[1]}' in ${tok}`);
    positionals.push(tok);
  }
  return { flags, positionals, help };
}

function intFlag(name: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`invalid argument "${value}" for "--${name}" flag: not a non-negative integer`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new UsageError(`invalid argument "${value}" for "--${name}" flag: out of range`);
  return n;
}

/** An HTTP method: a token (RFC 9110), sent upper-cased as node:http does. */
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The command a command line asks for. Throws UsageError for a bad command line, and a plain Error
 * for a `--debug-port` outside the allow-list (Istio's refusal, not a usage mistake).
 */
export function parseCommand(argv: readonly string[], env: Env = process.env): Command {
  // The command is the first token that is neither a flag nor a flag's value (flags may come first).
  let at = -1;
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === '--') {
      if (i + 1 < argv.length) at = i + 1;
      break;
    }
    if (tok.startsWith('-') && tok.length > 1) {
      if (tok.startsWith('--') && !tok.includes('=') && VALUE_FLAGS.has(tok.slice(2))) i++;
      continue;
    }
    at = i;
    break;
  }
  const rest = at < 0 ? [...argv] : [...argv.slice(0, at), ...argv.slice(at + 1)];
  const name = at < 0 ? undefined : argv[at]!;
  if (name === undefined) {
    splitFlags(rest, {}); // only -h/--help may come without a command
    return { kind: 'help', topic: 'root' };
  }
  if (!COMMANDS.includes(name)) {
    throw new UsageError(`unknown command "${name}" for "pilot-agent" (meshgate's pilot-agent has only "request" and "wait")`);
  }
  if (name === 'help') {
    const s = splitFlags(rest, {});
    const topic = s.positionals[0];
    if (topic === undefined) return { kind: 'help', topic: 'root' };
    if (topic === 'request' || topic === 'wait') return { kind: 'help', topic };
    throw new UsageError(`unknown help topic "${topic}" (meshgate's pilot-agent has only "request" and "wait")`);
  }
  const cmd = name as 'request' | 'wait';
  const s = splitFlags(rest, COMMAND_FLAGS[cmd]);
  if (s.help) return { kind: 'help', topic: cmd };
  if (cmd === 'wait') {
    if (s.positionals.length > 0) throw new UsageError(`"wait" takes no arguments, got ${s.positionals.map((p) => JSON.stringify(p)).join(' ')}`);
    const num = (flag: string, def: number) => (s.flags.has(flag) ? intFlag(flag, s.flags.get(flag)!) : def);
    const url = s.flags.get('url') ?? defaultReadyUrl(env);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new UsageError(`invalid argument "${url}" for "--url" flag: not a URL`);
    }
    if (parsed.protocol !== 'http:') throw new UsageError(`invalid argument "${url}" for "--url" flag: only http:// URLs are supported`);
    return {
      kind: 'wait',
      timeoutSeconds: num('timeoutSeconds', 60),
      requestTimeoutMillis: num('requestTimeoutMillis', 500),
      periodMillis: num('periodMillis', 500),
      url,
    };
  }
  if (s.positionals.length < 2) throw new UsageError(`requires at least 2 arg(s), only received ${s.positionals.length}`);
  const [method, path, body = ''] = s.positionals as [string, string, string?];
  if (!METHOD.test(method)) throw new UsageError(`invalid method ${JSON.stringify(method)}`);
  const port = s.flags.has('debug-port') ? intFlag('debug-port', s.flags.get('debug-port')!) : defaultDebugPort(env);
  checkDebugPort(port, env);
  try {
    requestUrl(port, path);
  } catch {
    throw new UsageError(`invalid path ${JSON.stringify(path)}`);
  }
  return { kind: 'request', method: method.toUpperCase(), path, body, port };
}

export function usage(topic: HelpCommand['topic'], env: Env = process.env): string {
  const head = `pilot-agent: meshgate's compatibility shim for Istio's pilot-agent, so that Istio runbooks and
hooks keep working in a meshgate container. Only "request" and "wait" exist here; the proxy itself
is \`meshgate run\`.
`;
  const request = `  pilot-agent request <method> <path> [<body>] [--debug-port N]
      Makes an HTTP request to the Envoy admin API (meshgate's admin on 127.0.0.1) and prints the
      response body; e.g. \`request GET stats\`, \`request GET clusters\`,
      \`request POST 'logging?level=debug'\`. Exits 1 on a status above 399 other than 404.
      --debug-port N   the local port to ask (default ${defaultDebugPort(env)}: $MESHGATE_ADMIN_PORT, else 15000);
                       one of ${allowedPorts(env).join(', ')}
`;
  const wait = `  pilot-agent wait [--timeoutSeconds N] [--requestTimeoutMillis N] [--periodMillis N] [--url URL]
      Waits until the Envoy proxy is ready: polls the URL until it answers 200. Exits 1 on timeout.
      --timeoutSeconds N         how long to wait (default 60)
      --requestTimeoutMillis N   timeout of each request (default 500; 0 = none)
      --periodMillis N           time between requests (default 500)
      --url URL                  the readiness URL (default ${defaultReadyUrl(env)})
`;
  if (topic === 'request') return `${head}\nUsage:\n${request}`;
  if (topic === 'wait') return `${head}\nUsage:\n${wait}`;
  return `${head}\nUsage:\n${request}${wait}  pilot-agent help [request|wait]\n`;
}

// ---- HTTP ----

/** Go's http.Client error prefix: `Get "http://localhost:15000/stats": ...`. */
function goOp(method: string, url: URL): string {
  const m = method.charAt(0).toUpperCase() + method.slice(1).toLowerCase();
  return `${m} "${url.href}"`;
}

/** One request; the whole body read. `timeoutMs` (0 = none) covers the headers and the body. */
export function fetchOnce(method: string, url: URL, body: string, timeoutMs: number): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const { host, port } = connectTarget(url);
    // Go sends Host localhost:PORT; node:http adds Content-Length for the body given to end() (0 for
    // a POST without one, none for a GET), as Go does.
    const headers: http.OutgoingHttpHeaders = { host: url.host };
    let timer: NodeJS.Timeout | undefined;
    const fail = (err: Error) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`${goOp(method, url)}: ${err.message}`));
    };
    let req: http.ClientRequest;
    try {
      req = http.request({ host, port, method, path: `${url.pathname}${url.search}`, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', fail);
        res.on('close', () => {
          if (!res.complete) fail(new Error('response body cut short'));
        });
        res.on('end', () => {
          if (timer) clearTimeout(timer);
          if (!res.complete) return fail(new Error('response body cut short'));
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) });
        });
      });
    } catch (err) {
      fail(asError(err));
      return;
    }
    req.on('error', fail);
    if (timeoutMs > 0) {
      timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    }
    req.end(body === '' ? undefined : body);
  });
}

// ---- main ----

export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

const quieted = new WeakSet<NodeJS.WritableStream>();

/** Write and wait for it; a reader that went away (`| head`) is not an error worth a stack trace. */
function write(stream: NodeJS.WritableStream, data: string | Buffer): Promise<void> {
  if (!quieted.has(stream)) {
    quieted.add(stream);
    stream.on('error', () => {});
  }
  return new Promise((resolve) => {
    try {
      stream.write(data, () => resolve());
    } catch {
      resolve();
    }
  });
}

/** Istio's log line: `2024-05-01T10:00:00.000000Z\tinfo\t<message>` (its logger writes to stdout). */
function logLine(message: string, now: number): string {
  const ts = new Date(now).toISOString().replace(/Z$/, '000Z'); // microseconds, as Istio's logger
  return `${ts}\tinfo\t${message}\n`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function runRequest(cmd: RequestCommand, io: Io): Promise<number> {
  const url = requestUrl(cmd.port, cmd.path);
  let res: { status: number; body: Buffer };
  try {
    res = await fetchOnce(cmd.method, url, cmd.body, REQUEST_TIMEOUT_MS);
  } catch (err) {
    await write(io.stderr, `Error: ${asError(err).message}\n`);
    return 1;
  }
  if (res.status > 399 && res.status !== 404) {
    await write(io.stderr, `Error: received unsuccessful status code ${res.status}: ${res.body.toString()}\n`);
    return 1;
  }
  await write(io.stdout, Buffer.concat([res.body, Buffer.from('\n')]));
  return 0;
}

/** Istio's readiness check: a 200 whose body was read completely. Returns the failure, or undefined. */
async function checkReady(url: URL, timeoutMs: number): Promise<string | undefined> {
  try {
    const res = await fetchOnce('GET', url, '', timeoutMs);
    return res.status === 200 ? undefined : `HTTP status code ${res.status}`;
  } catch (err) {
    return asError(err).message;
  }
}

async function runWait(cmd: WaitCommand, io: Io): Promise<number> {
  const now = Date.now;
  const url = new URL(cmd.url);
  await write(io.stdout, logLine(`Waiting for Envoy proxy to be ready (timeout: ${cmd.timeoutSeconds} seconds)...`, now()));
  const deadline = now() + cmd.timeoutSeconds * 1000;
  let last = '<nil>';
  for (;;) {
    // As Istio: each attempt comes one period after the previous one ended, unless the timeout is first.
    const remaining = deadline - now();
    if (remaining < cmd.periodMillis) {
      if (remaining > 0) await sleep(remaining);
      await write(io.stderr, `Error: timeout waiting for Envoy proxy to become ready. Last error: ${last}\n`);
      return 1;
    }
    await sleep(cmd.periodMillis);
    const failure = await checkReady(url, cmd.requestTimeoutMillis);
    if (failure === undefined) {
      await write(io.stdout, logLine('Envoy is ready!', now()));
      return 0;
    }
    last = failure;
  }
}

/** Run a pilot-agent command line; resolves to the exit code. Never throws. */
export async function main(argv: string[], env: Env = process.env, io: Io = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let cmd: Command;
  try {
    cmd = parseCommand(argv, env);
  } catch (err) {
    const usageHint = err instanceof UsageError ? "Run 'pilot-agent --help' for usage.\n" : '';
    await write(io.stderr, `Error: ${asError(err).message}\n${usageHint}`);
    return 1;
  }
  try {
    switch (cmd.kind) {
      case 'help':
        await write(io.stdout, usage(cmd.topic, env));
        return 0;
      case 'request':
        return await runRequest(cmd, io);
      case 'wait':
        return await runWait(cmd, io);
    }
  } catch (err) {
    await write(io.stderr, `Error: ${asError(err).message}\n`);
    return 1;
  }
}
