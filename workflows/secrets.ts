/**
 * Whether a migration's input carries a password (pure, for workflow code): a worker that stores
 * payloads unencrypted refuses such a spec before any activity stores it in history again.
 */

/** A URI's user:password@, its ?password=, or a key=value string's password=. */
const PARAM_PASSWORD = /[?&]password=[^&]/i;
const KEYWORD_PASSWORD = /(^|\s)password\s*=\s*('[^']+'|[^\s']+)/i;

function connectionHasPassword(c: unknown): boolean {
  if (typeof c === 'string') {
    const userinfo = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)@/i.exec(c)?.[1];
    return Boolean(userinfo && /:./.test(userinfo)) || PARAM_PASSWORD.test(c) || KEYWORD_PASSWORD.test(c);
  }
  if (c && typeof c === 'object') {
    const pw = (c as { password?: unknown }).password;
    return typeof pw === 'string' && pw !== '';
  }
  return false;
}

/** True when the spec's source or target carries a password. */
export function specCarriesPassword(spec: unknown): boolean {
  if (!spec || typeof spec !== 'object') return false;
  const s = spec as { source?: unknown; target?: unknown };
  return connectionHasPassword(s.source) || connectionHasPassword(s.target);
}
