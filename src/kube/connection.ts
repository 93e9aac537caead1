// Where the Kubernetes API is and how to authenticate: in-cluster (the pod's service account) or a
// kubeconfig (its current context; several files, as in KUBECONFIG, merged as kubectl merges them).
// Reading is separate from parsing so the parsers are pure.

import fs from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { asError } from '../errors';

/** Everything the API client needs to connect; PEM texts, not paths. */
export interface KubeConnection {
  /**
   * `https://host:port` (or `http://` for a local test server), no trailing slash; it may have a path
   * (`https://rancher.example.com/k8s/clusters/c-abc`), which, as in client-go, is the base of every
   * API path (the client splits it: see splitServer in client.ts).
   */
  readonly server: string;
  readonly ca?: string;
  /**
   * kubeconfig `tls-server-name`: the name sent in SNI and checked against the server certificate
   * instead of the host of `server` (an IP address or a load balancer's name the certificate lacks).
   */
  readonly tlsServerName?: string;
  readonly cert?: string;
  readonly key?: string;
  /** A fixed bearer token. */
  readonly token?: string;
  /** A token file re-read periodically (bound service-account tokens rotate). */
  readonly tokenFile?: string;
  /** A kubeconfig exec credential plugin (aws eks get-token, gke-gcloud-auth-plugin, kubelogin, ...). */
  readonly exec?: ExecPlugin;
  readonly insecureSkipTlsVerify: boolean;
  /** kubeconfig `proxy-url`: an HTTP(S) proxy the API is reached through (CONNECT), as kubectl does. */
  readonly proxyUrl?: string;
  /** The namespace of the context or of the service account, when known. */
  readonly namespace?: string;
  /** For messages: where this came from. */
  readonly describe: string;
}

/** `users[].user.exec` of a kubeconfig (client.authentication.k8s.io v1 / v1beta1). */
export interface ExecPlugin {
  /** The command; a relative path with a directory part is relative to the kubeconfig's directory. */
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly apiVersion: string;
  readonly installHint?: string;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** In-cluster config: KUBERNETES_SERVICE_HOST/PORT and the service account's token, CA and namespace. */
export function inClusterConnection(env: NodeJS.ProcessEnv, dir = SERVICE_ACCOUNT_DIR, read: (p: string) => string | undefined = readIfExists): KubeConnection {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'] || '443';
  if (!host) throw new Error('not running in a cluster (KUBERNETES_SERVICE_HOST is not set): pass --kubeconfig or set KUBECONFIG');
  const tokenFile = path.join(dir, 'token');
  if (read(tokenFile) === undefined) throw new Error(`in-cluster config: cannot read the service account token ${tokenFile}`);
  const ca = read(path.join(dir, 'ca.crt'));
  const namespace = read(path.join(dir, 'namespace'))?.trim();
  const h = host.includes(':') ? `[${host}]` : host; // IPv6 service host
  return {
    server: `https://${h}:${port}`,
    ...(ca ? { ca } : {}),
    tokenFile,
    insecureSkipTlsVerify: false,
    ...(namespace ? { namespace } : {}),
    describe: `in-cluster (${SERVICE_ACCOUNT_DIR === dir ? 'service account' : dir})`,
  };
}

function readIfExists(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (o: Obj | undefined, k: string): string | undefined => (typeof o?.[k] === 'string' && o[k] !== '' ? (o[k] as string) : undefined);

/** One kubeconfig file's text and its path (for messages and for relative paths in it). */
export interface KubeconfigFile {
  readonly file: string;
  readonly text: string;
}

/** A named entry of a merged kubeconfig (`context`, `cluster` or `user`) and the file that defined it. */
interface Found {
  readonly body: Obj | undefined;
  readonly file: string;
}

function parseDoc(text: string, file: string): Obj {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new Error(`kubeconfig ${file}: cannot parse: ${asError(err).message}`);
  }
  // An empty file is an empty config (kubectl skips it); anything else must be a mapping.
  if (doc === null || doc === undefined) return {};
  if (!isObj(doc)) throw new Error(`kubeconfig ${file}: not a mapping`);
  return doc;
}

/**
 * A kubeconfig's current context (or `context`): server, tls-server-name, certificate-authority(-data),
 * client-certificate(-data), client-key(-data), token or tokenFile, an exec credential plugin (token
 * credentials), insecure-skip-tls-verify, the context's namespace. Relative file paths are relative to
 * the kubeconfig's directory. The legacy auth-provider plugins are refused with a clear error.
 */
export function parseKubeconfig(text: string, file: string, read: (p: string) => string | undefined = readIfExists, context?: string): KubeConnection {
  return parseKubeconfigs([{ file, text }], read, context);
}

/**
 * Several kubeconfig files (a KUBECONFIG list) merged as kubectl merges them: `current-context` from
 * the first file that sets it; a context, cluster or user from the first file that defines that name
 * (later definitions of the same name are ignored, not merged field by field). Relative paths in a
 * cluster or user are relative to the directory of the file that defined it, and errors name that file.
 */
export function parseKubeconfigs(files: readonly KubeconfigFile[], read: (p: string) => string | undefined = readIfExists, context?: string): KubeConnection {
  if (files.length === 0) throw new Error('kubeconfig: no files');
  const docs = files.map(({ file, text }) => ({ file, doc: parseDoc(text, file) }));
  const all = files.map((f) => f.file).join(path.delimiter);
  const find = (list: 'contexts' | 'clusters' | 'users', field: string, name: string | undefined): Found | undefined => {
    if (!name) return undefined;
    for (const { file, doc } of docs) {
      const entries = doc[list];
      const entry = Array.isArray(entries) ? entries.find((e) => isObj(e) && e['name'] === name) as Obj | undefined : undefined;
      if (entry) return { body: isObj(entry[field]) ? entry[field] as Obj : undefined, file };
    }
    return undefined;
  };
  const ctxName = context ?? docs.map(({ doc }) => str(doc, 'current-context')).find((c) => c !== undefined);
  if (!ctxName) throw new Error(`kubeconfig ${all}: no current-context`);
  const ctxFound = find('contexts', 'context', ctxName);
  const ctx = ctxFound?.body;
  if (!ctxFound || !ctx) throw new Error(`kubeconfig ${ctxFound?.file ?? all}: context "${ctxName}" is not defined`);
  const clusterName = str(ctx, 'cluster');
  const clusterFound = find('clusters', 'cluster', clusterName);
  const cluster = clusterFound?.body;
  if (!clusterFound || !cluster) throw new Error(`kubeconfig ${clusterFound?.file ?? all}: cluster "${clusterName ?? ''}" of context "${ctxName}" is not defined`);
  const userName = str(ctx, 'user');
  const userFound = find('users', 'user', userName);
  const user = userFound?.body ?? {};
  const clusterFile = clusterFound.file;
  const userFile = userFound?.file ?? ctxFound.file;
  const server = str(cluster, 'server');
  if (!server) throw new Error(`kubeconfig ${clusterFile}: cluster "${clusterName}" has no server`);
  if (user['auth-provider'] !== undefined) {
    throw new Error(`kubeconfig ${userFile}: user "${userName}" uses an auth-provider plugin (removed from kubectl in Kubernetes 1.26); use its exec plugin, a token or a client certificate`);
  }
  const exec = user['exec'] === undefined ? undefined : parseExec(user['exec'], path.dirname(userFile), `kubeconfig ${userFile}: user "${userName}" exec`);
  const pem = (o: Obj, file: string, dataKey: string, fileKey: string): string | undefined => {
    const data = str(o, dataKey);
    if (data) return Buffer.from(data, 'base64').toString('utf8');
    const f = str(o, fileKey);
    if (!f) return undefined;
    const p = path.resolve(path.dirname(file), f);
    const text = read(p);
    if (text === undefined) throw new Error(`kubeconfig ${file}: cannot read ${fileKey} ${p}`);
    return text;
  };
  const ca = pem(cluster, clusterFile, 'certificate-authority-data', 'certificate-authority');
  const tlsServerName = str(cluster, 'tls-server-name');
  const proxyUrl = str(cluster, 'proxy-url');
  if (proxyUrl !== undefined) {
    let scheme = '';
    try {
      scheme = new URL(proxyUrl).protocol;
    } catch {
      throw new Error(`kubeconfig ${clusterFile}: cluster proxy-url ${JSON.stringify(proxyUrl)} is not a URL`);
    }
    // client-go also speaks socks5; meshgate reaches the API through HTTP(S) proxies (CONNECT) only.
    if (scheme !== 'http:' && scheme !== 'https:') throw new Error(`kubeconfig ${clusterFile}: cluster proxy-url ${JSON.stringify(proxyUrl)}: only http:// and https:// proxies are supported`);
  }
  const cert = pem(user, userFile, 'client-certificate-data', 'client-certificate');
  const key = pem(user, userFile, 'client-key-data', 'client-key');
  const token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  const namespace = str(ctx, 'namespace');
  return {
    server: server.replace(/\/+$/, ''),
    ...(ca ? { ca } : {}),
    ...(tlsServerName ? { tlsServerName } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(token ? { token } : {}),
    ...(tokenFile ? { tokenFile: path.resolve(path.dirname(userFile), tokenFile) } : {}),
    ...(exec ? { exec } : {}),
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    ...(proxyUrl ? { proxyUrl } : {}),
    ...(namespace ? { namespace } : {}),
    describe: `kubeconfig ${all} (context ${ctxName})`,
  };
}

const EXEC_API_VERSIONS = new Set(['client.authentication.k8s.io/v1', 'client.authentication.k8s.io/v1beta1']);

function parseExec(v: unknown, dir: string, where: string): ExecPlugin {
  if (!isObj(v)) throw new Error(`${where}: not a mapping`);
  const command = str(v, 'command');
  if (!command) throw new Error(`${where}: no command`);
  const apiVersion = str(v, 'apiVersion') ?? '';
  if (!EXEC_API_VERSIONS.has(apiVersion)) throw new Error(`${where}: apiVersion ${JSON.stringify(apiVersion)}: meshgate speaks ${[...EXEC_API_VERSIONS].join(' and ')}`);
  const args = v['args'] === undefined ? [] : v['args'];
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw new Error(`${where}: args must be a list of strings`);
  const env: Record<string, string> = {};
  const list = v['env'] ?? [];
  if (!Array.isArray(list)) throw new Error(`${where}: env must be a list of {name, value}`);
  for (const e of list) {
    if (!isObj(e) || typeof e['name'] !== 'string' || typeof e['value'] !== 'string') throw new Error(`${where}: env must be a list of {name, value}`);
    env[e['name']] = e['value'];
  }
  const installHint = str(v, 'installHint');
  return {
    // kubectl: a command with a path separator is relative to the kubeconfig; a bare name is looked up in PATH.
    command: command.includes('/') ? path.resolve(dir, command) : command,
    args: args as string[], env, apiVersion, ...(installHint ? { installHint } : {}),
  };
}

/**
 * `--kubeconfig` (or KUBECONFIG) when given, else in-cluster. A list of files (separated by ':', ';'
 * on Windows) is merged as kubectl merges it (parseKubeconfigs); files of the list that do not exist
 * are skipped, as kubectl skips them, but at least one must be there.
 */
export function resolveConnection(kubeconfig: string | undefined, env: NodeJS.ProcessEnv = process.env): KubeConnection {
  if (kubeconfig) {
    const paths = [...new Set(kubeconfig.split(path.delimiter).filter(Boolean))];
    const files: KubeconfigFile[] = [];
    for (const file of paths) {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && paths.length > 1) continue;
        throw new Error(`kubeconfig ${file}: cannot read: ${asError(err).message}`);
      }
      files.push({ file, text });
    }
    if (files.length === 0) throw new Error(`kubeconfig ${kubeconfig}: cannot read: none of the files exists`);
    return parseKubeconfigs(files);
  }
  return inClusterConnection(env);
}

/**
 * The gateway's namespace: the flag, else (in a pod, Kubernetes source) the service account's
 * namespace, else istio-system. A kubeconfig context's namespace is a user's working namespace, not
 * the gateway's, so it is not used.
 */
export function gatewayNamespace(flag: string, inCluster: { readonly namespace?: string } | undefined): string {
  return flag || inCluster?.namespace || 'istio-system';
}
