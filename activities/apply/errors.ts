/**
 * The apply's failures (SYNCING_WAL): an ApplyError names the table and operation, never row values;
 * `permanent` tells the activity edge whether a retry can succeed.
 */

export interface ApplyErrorInfo {
  /** Target table (or source table, for an unmapped one). */
  table?: string;
  operation?: string;
  /** SQLSTATE (or Node's error code) of the underlying error. */
  code?: string;
  /**
   * A retry meets the same error until someone changes something (the schema, the mapping, a grant);
   * false for connection losses and other transient trouble.
   */
  permanent?: boolean;
}

export class ApplyError extends Error {
  override name = 'ApplyError';
  readonly table?: string;
  readonly operation?: string;
  readonly code?: string;
  readonly permanent: boolean;
  constructor(message: string, info: ApplyErrorInfo = {}) {
    super(message);
    this.table = info.table;
    this.operation = info.operation;
    this.code = info.code;
    this.permanent = info.permanent ?? false;
  }
}

/**
 * A database error's message without row values: data exceptions (class 22) quote the offending value
 * ("invalid input syntax for type integer: \"abc\""), so it is blanked; DETAIL (which holds key values
 * for unique violations) is never used.
 */
export function safeDbMessage(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown };
  let msg = typeof e?.message === 'string' ? e.message : String(err);
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (code?.startsWith('22')) {
    // Values are quoted (and may contain quotes), or follow a colon ("...: 0xc3 0x28").
    msg = msg.replace(/"[\s\S]*"/, '"…"').replace(/:\s[\s\S]*$/, ': …');
  }
  return code && /^[0-9A-Z]{5}$/.test(code) ? `${msg} (SQLSTATE ${code})` : msg;
}


export function sqlState(err: unknown): string | undefined {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'string' ? c : undefined;
}

/** Errors after which nothing on this connection can work: no replay, fail (and retry from the progress row). */
export function connectionLevel(code: string | undefined): boolean {
  return code === undefined || /^(08|57|53|58|XX)/.test(code);
}
