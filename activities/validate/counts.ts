/**
 * Row counts alone (validateCounts).
 */
import { withClient } from '../db';
import { classify } from '../errors';
import { qname } from '../sql';
import { displayName, type ConnectionSpec, type QualifiedName } from '../spec';

export interface ValidateInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  tables: Array<{ source: QualifiedName; target: QualifiedName }>;
}

export interface TableValidation {
  source: string;
  target: string;
  sourceRows: number;
  targetRows: number;
  countsMatch: boolean;
}

async function countAll(spec: ConnectionSpec, names: QualifiedName[]): Promise<number[]> {
  return withClient(
    spec,
    async (c) => {
      // One repeatable-read transaction: every count sees the same moment.
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const out: number[] = [];
      for (const n of names) {
        const r = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${qname(n)}`);
        out.push(Number(r.rows[0]!.n));
      }
      await c.query('COMMIT');
      return out;
    },
    { applicationName: 'pg-dts validate' },
  );
}

export async function validateCounts(input: ValidateInput): Promise<TableValidation[]> {
  try {
    const [src, dst] = await Promise.all([
      countAll(input.source, input.tables.map((t) => t.source)),
      countAll(input.target, input.tables.map((t) => t.target)),
    ]);
    return input.tables.map((t, i) => ({
      source: displayName(t.source),
      target: displayName(t.target),
      sourceRows: src[i]!,
      targetRows: dst[i]!,
      countsMatch: src[i] === dst[i],
    }));
  } catch (err) {
    throw classify(err, 'validate');
  }
}
