/**
 * Names the migration leaves on the servers (slot, publication, fence trigger) derive from the
 * workflow id: stable across retries and replays, unique per migration, valid as slot names
 * ([a-z0-9_], at most 63 bytes with our prefixes).
 */

/** 32-bit FNV-1a: a short, deterministic fingerprint (not security-sensitive). */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

export function migrationIdFor(workflowId: string): string {
  const readable = workflowId
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 30);
  return `${readable || 'm'}_${fnv1a(workflowId)}`;
}

/** A copy child's workflow id: the migration's, then `-copy-<n>` (workflows/phases/copy-child-round.ts). */
export const copyChildId = (workflowId: string, n: number): string => `${workflowId}-copy-${n}`;

/** The migration's workflow id, from one of its copy children's. */
export const copyChildParent = (childId: string): string => childId.replace(/-copy-\d+$/, '');

/** The id naming slot, publication and fence: spec.id when valid, else derived from the workflow id. */
export function migrationIdOf(spec: unknown, workflowId: string): string {
  const rawId = (spec as { id?: unknown } | null)?.id;
  return typeof rawId === 'string' && /^[a-z0-9_]{1,40}$/.test(rawId) ? rawId : migrationIdFor(workflowId);
}

/** The replication slot's name, also the publication's. */
export function slotNameFor(migrationId: string): string {
  return `pg_dts_${migrationId}`;
}

/**
 * afterCutover "reverse": the id naming the fallback's slot and publication (on the target), its
 * progress row (on the source) and the rollback's fence (on the target) — apart from the forward
 * ones, also when source and target are one database.
 */
export function reverseIdFor(migrationId: string): string {
  return `${migrationId}_r`;
}

/**
 * The key of a qualified name in maps and sets: schema and name joined by a NUL, which no identifier
 * holds (a dot-joined key confused "a.b"."c" with "a"."b.c"). Here so the workflow bundle has it too.
 */
export function nameKey(q: { schema: string; name: string }): string {
  return `${q.schema}\u0000${q.name}`;
}
