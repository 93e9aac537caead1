// node:http's own parser (llhttp, strict as node:http runs it), for differential tests: whatever
// our HTTP/1.1 parsers take must read the same way to it. It is node's internal binding, reached
// through `_http_common` (a legacy module node still ships); tests only.

// eslint-disable-next-line @typescript-eslint/no-require-imports
const common = require('_http_common') as { HTTPParser: LlhttpParserClass; methods: string[] };

interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(buf: Buffer): number | (Error & { code?: string; reason?: string });
  finish(): number | Error | undefined;
  [key: number]: unknown;
}

interface LlhttpParserClass {
  new (): LlhttpParser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
}

/** What llhttp made of one message's bytes (the first message only). */
export interface LlhttpResult {
  /** The error code llhttp stopped with (HPE_...), if any. */
  readonly error?: string;
  /** The head ended (headers complete). */
  readonly headEnd: boolean;
  /** The first message ended (body included). */
  readonly complete: boolean;
  readonly method?: string;
  readonly url?: string;
  readonly status?: number;
  readonly reason?: string;
  readonly versionMinor?: number;
  /** Names and values as llhttp reports them, in order. */
  readonly rawHeaders: readonly string[];
  readonly keepAlive?: boolean;
  readonly upgrade?: boolean;
  /** Body bytes of the first message. */
  readonly bodyBytes: number;
}

/**
 * Parse `buf` as node:http would (strict; node's default 16 KiB header limit). `headRequest`: the
 * response answers a HEAD (no body whatever its headers say). `eof`: the bytes end there (a
 * close-delimited body ends with them).
 */
export function llhttpParse(kind: 'request' | 'response', buf: Buffer, opts: { headRequest?: boolean; eof?: boolean } = {}): LlhttpResult {
  const { HTTPParser, methods } = common;
  const p = new HTTPParser();
  p.initialize(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, 0, 0);
  const raw: string[] = [];
  let url = '';
  let head: Partial<LlhttpResult> = {};
  let headEnd = false;
  let complete = false;
  let bodyBytes = 0;
  p[HTTPParser.kOnHeaders] = (headers: string[], partUrl: string) => {
    raw.push(...headers);
    url += partUrl;
  };
  p[HTTPParser.kOnHeadersComplete] = (_maj: number, min: number, headers: string[] | undefined, method: number, u: string | undefined,
    status: number, reason: string, upgrade: boolean, keepAlive: boolean) => {
    if (headers) raw.push(...headers);
    headEnd = true;
    head = { versionMinor: min, method: kind === 'request' ? methods[method] : undefined, url: u ?? url, status: kind === 'response' ? status : undefined, reason, upgrade, keepAlive };
    // 1: no body (what node:http's client returns for a response to HEAD).
    return opts.headRequest ? 1 : 0;
  };
  p[HTTPParser.kOnBody] = (b: Buffer) => {
    if (!complete) bodyBytes += b.length;
  };
  p[HTTPParser.kOnMessageComplete] = () => {
    complete = true;
  };
  let error: string | undefined;
  const r = p.execute(buf);
  if (r instanceof Error) error = r.code ?? r.message;
  else if (opts.eof && !complete) {
    const f = p.finish();
    if (f instanceof Error) error = (f as Error & { code?: string }).code ?? f.message;
  }
  return { ...head, error, headEnd, complete, rawHeaders: raw, bodyBytes };
}
