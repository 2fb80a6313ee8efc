import { describe, expect, it } from 'vitest';
import { indexOf } from '../../activities/index-progress';

describe('indexOf: the index a post-load statement builds', () => {
  it('names the index of CREATE INDEX and of a key attached USING INDEX, quoted or not', () => {
    expect(indexOf('CREATE INDEX ix_expensive ON public.ix USING btree (md5(v))')).toBe('ix_expensive');
    expect(indexOf('CREATE UNIQUE INDEX IF NOT EXISTS "Orders ""pk""" ON "Sales Dept".orders (id)')).toBe('Orders "pk"');
    expect(indexOf('ALTER TABLE public.t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_pkey')).toBe('t_pkey');
  });
  it('falls back to the statement, cut at 60 characters', () => {
    expect(indexOf('ANALYZE public.t')).toBe('ANALYZE public.t');
    expect(indexOf(`ALTER TABLE public.t VALIDATE ${'x'.repeat(80)}`)).toHaveLength(61);
  });
});
