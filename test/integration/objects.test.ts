/**
 * migrateSchemaObjects against real clusters (no Temporal): tables created on the target from the
 * source catalog and copied (createTargetTables + copyTable + finishTargetTables, as the workflow
 * does), then the views, materialized views, functions, aggregates and triggers recreated through a
 * schema mapping and a suffix. Checked by running them on both sides: every view returns the source's
 * rows, the materialized view is refreshed, functions return the same results, the trigger fires on
 * the target, string bodies (SQL and PL/pgSQL) read the renamed tables (an audit-log trigger writes
 * into the renamed log table). An object that needs a table that is not migrated is skipped with the
 * reason, and so is what depends on it. A second run changes nothing. Then pagila's own views,
 * functions and triggers: inventory_in_stock and the functions around it give the source's results.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyTable } from '../../activities/copy';
import { migrateSchemaObjects, type SchemaObjectsResult } from '../../activities/objects';
import { createTargetTables } from '../../activities/create-tables';
import { finishTargetTables } from '../../activities/post-load';
import { normalizeSpec, type MigrationSpecInput, type QualifiedName } from '../../activities/spec';
import { fingerprint } from '../harness/compare';
import { createAndCopy } from '../harness/load';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

const SOURCE_DDL = `
CREATE SCHEMA shop;
CREATE SCHEMA "Sales Dept";
CREATE TYPE shop.status AS ENUM ('new', 'paid');
CREATE TABLE shop.customers (id int PRIMARY KEY, name text NOT NULL, region text, updated_at timestamptz);
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int REFERENCES shop.customers, amount numeric(10,2), status shop.status NOT NULL DEFAULT 'new');
CREATE TABLE "Sales Dept"."Order Items" ("Order" int REFERENCES shop.orders, line int, "Qty" int, PRIMARY KEY ("Order", line));
CREATE TABLE shop.notes (id int PRIMARY KEY, body text);

-- joins two migrated tables through aliases
CREATE VIEW shop.customer_totals AS
  SELECT c.id, c.name, sum(o.amount) AS total, count(*) AS orders
    FROM shop.customers c JOIN shop.orders o ON o.customer_id = c.id GROUP BY c.id, c.name;
-- no alias: column references print as orders.x, and a cast to an enum that moves with its schema
CREATE VIEW shop.paid_orders AS SELECT * FROM shop.orders WHERE status = 'paid';
-- a view on a view, and the same table twice (one without an alias)
CREATE VIEW shop.big_spenders AS SELECT id, name FROM shop.customer_totals WHERE total > 100;
CREATE VIEW shop.self_join AS SELECT a.id, orders.amount FROM shop.orders a, shop.orders WHERE a.id = orders.id;
-- names with spaces, quotes and capitals, across schemas
CREATE VIEW "Sales Dept"."Big Items" AS SELECT "Order Items"."Order", "Qty", orders.amount
  FROM "Sales Dept"."Order Items" JOIN shop.orders ON orders.id = "Order Items"."Order" WHERE "Qty" > 1;

CREATE MATERIALIZED VIEW shop.region_sales AS
  SELECT customers.region, count(*) AS n, sum(orders.amount) AS total
    FROM shop.orders JOIN shop.customers ON customers.id = orders.customer_id GROUP BY customers.region;
CREATE UNIQUE INDEX region_sales_region ON shop.region_sales (region);
CREATE VIEW shop.top_regions AS SELECT region FROM shop.region_sales WHERE total > 50;

-- plpgsql trigger function and its trigger
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  NEW.name := upper(NEW.name);
  RETURN NEW;
END $$;
CREATE TRIGGER customers_touch BEFORE INSERT OR UPDATE ON shop.customers FOR EACH ROW EXECUTE FUNCTION shop.touch();
-- SQL-standard body (parsed: renamed like a view), used by a view
CREATE FUNCTION shop.order_total(p_customer int) RETURNS numeric LANGUAGE sql STABLE
  BEGIN ATOMIC SELECT coalesce(sum(amount), 0) FROM shop.orders WHERE customer_id = p_customer; END;
CREATE VIEW shop.with_total AS SELECT id, shop.order_total(id) AS total FROM shop.customers;
-- string body naming tables through its search_path: renamed, kept relative to the mapped search_path
CREATE FUNCTION shop.big_customers(min numeric DEFAULT 0) RETURNS SETOF shop.customers LANGUAGE sql SET search_path = shop
  AS $$ SELECT * FROM customers c WHERE (SELECT sum(amount) FROM orders o WHERE o.customer_id = c.id) > min $$;
-- an audit log: a PL/pgSQL trigger function on a renamed table writing into another renamed table
CREATE TABLE shop.order_audit (id bigserial PRIMARY KEY, order_id int NOT NULL, old_amount numeric(10,2), new_amount numeric(10,2), orders_of_customer int, note text);
CREATE FUNCTION shop.audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_amount shop.orders.amount%TYPE := NEW.amount;
  n int;
BEGIN
  -- counts the customer's orders in shop.orders, then logs to order_audit
  SELECT count(*) INTO n FROM shop.orders WHERE orders.customer_id = NEW.customer_id;
  INSERT INTO shop.order_audit (order_id, old_amount, new_amount, orders_of_customer, note)
    VALUES (NEW.id, OLD.amount, v_amount, n, 'shop.orders changed');
  RETURN NEW;
END $$;
CREATE TRIGGER orders_audit AFTER UPDATE OF amount ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.audit_order();
-- an aggregate over a function of the schema
CREATE FUNCTION shop.add_amount(numeric, numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT $1 + coalesce($2, 0)';
CREATE AGGREGATE shop.total_of(numeric) (SFUNC = shop.add_amount, STYPE = numeric, INITCOND = '0');

-- not migrated: skipped with the reason, and what depends on it too
CREATE VIEW shop.note_view AS SELECT n.id, n.body FROM shop.notes n;
CREATE VIEW shop.note_count AS SELECT count(*) AS n FROM shop.note_view;

INSERT INTO shop.customers (id, name, region) SELECT i, 'customer ' || i, 'region ' || (i % 4) FROM generate_series(1, 40) i;
INSERT INTO shop.orders SELECT i, 1 + i % 40, (i % 17) * 3.25, CASE WHEN i % 3 = 0 THEN 'paid' ELSE 'new' END::shop.status FROM generate_series(1, 400) i;
INSERT INTO "Sales Dept"."Order Items" SELECT 1 + i % 400, i, i % 5 FROM generate_series(1, 600) i;
INSERT INTO shop.notes VALUES (1, 'left behind');
REFRESH MATERIALIZED VIEW shop.region_sales;
`;

const MAPPING = { schemaMapping: { shop: 'store', 'Sales Dept': 'Ventes' }, tableSuffix: '_v2' };

/** Creates the migrated tables on the target and copies them, the way the workflow's first phases do. */
async function migrateTables(source: PgCluster, target: PgCluster, db: string, specInput: Omit<MigrationSpecInput, 'source' | 'target'>) {
  const spec = normalizeSpec({ ...specInput, source: source.uri(db), target: target.uri(db) });
  const defs = await createAndCopy(spec, source, db);
  await finishTargetTables({ target: spec.target, defs });
  return { spec, tables: defs.map((d) => ({ source: d.source, target: d.target })) };
}

const sorted = (xs: string[]) => [...xs].sort();

let source: PgCluster;
let target: PgCluster;

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'obj-source' }), startCluster({ name: 'obj-target' })]);
});

afterAll(async () => {
  await Promise.allSettled([source?.destroy(), target?.destroy()]);
});

describe('views, materialized views, functions and triggers after cutover', () => {
  let first: SchemaObjectsResult;
  let input: Parameters<typeof migrateSchemaObjects>[0];

  beforeAll(async () => {
    await source.query(SOURCE_DDL);
    const { spec, tables } = await migrateTables(source, target, 'postgres', {
      schemas: ['shop', 'Sales Dept'],
      tables: ['shop.customers', 'shop.orders', 'shop.order_audit', '"Sales Dept"."Order Items"'],
      ...MAPPING,
    });
    input = { source: spec.source, target: spec.target, schemas: spec.schemas, tables, ...MAPPING };
    first = await migrateSchemaObjects(input);
  });

  it('creates every object whose dependencies are there, and says why the others are not', () => {
    expect(sorted(first.created)).toEqual(
      sorted([
        'aggregate shop.total_of(numeric) -> store.total_of',
        'function shop.add_amount(numeric,numeric) -> store.add_amount',
        'function shop.audit_order() -> store.audit_order',
        'function shop.big_customers(numeric) -> store.big_customers',
        'function shop.order_total(integer) -> store.order_total',
        'function shop.touch() -> store.touch',
        'materialized view shop.region_sales -> store.region_sales_v2',
        'view Sales Dept.Big Items -> Ventes.Big Items_v2',
        'view shop.big_spenders -> store.big_spenders_v2',
        'view shop.customer_totals -> store.customer_totals_v2',
        'view shop.paid_orders -> store.paid_orders_v2',
        'view shop.self_join -> store.self_join_v2',
        'view shop.top_regions -> store.top_regions_v2',
        'view shop.with_total -> store.with_total_v2',
        'trigger customers_touch on shop.customers -> store.customers_v2',
        'trigger orders_audit on shop.orders -> store.orders_v2',
      ]),
    );
    expect(first.skipped).toEqual([
      { object: 'view shop.note_view', reason: 'uses table shop.notes, which is not migrated and does not exist on the target' },
      { object: 'view shop.note_count', reason: 'depends on view shop.note_view, which was not created' },
    ]);
    // String bodies follow the mapping, and the result says how; nothing is left for the DBA to check.
    expect(first.rewritten).toEqual([
      'function shop.audit_order(): its body now names shop.order_audit -> store.order_audit_v2, shop.orders -> store.orders_v2',
      'function shop.big_customers(numeric): its body now names shop.customers -> store.customers_v2, shop.orders -> store.orders_v2',
    ]);
    expect(first.notices).toEqual([]);
    // Dependencies first: the view on the view after it, the view on the matview after it.
    const at = (s: string) => first.created.findIndex((x) => x.startsWith(s));
    expect(at('view shop.big_spenders')).toBeGreaterThan(at('view shop.customer_totals'));
    expect(at('view shop.top_regions')).toBeGreaterThan(at('materialized view shop.region_sales'));
    expect(at('view shop.with_total')).toBeGreaterThan(at('function shop.order_total'));
    expect(at('trigger')).toBe(first.created.length - 2);
  });

  it('every view returns the rows the source view returns', async () => {
    const pairs: Array<[QualifiedName, QualifiedName]> = [
      [{ schema: 'shop', name: 'customer_totals' }, { schema: 'store', name: 'customer_totals_v2' }],
      [{ schema: 'shop', name: 'paid_orders' }, { schema: 'store', name: 'paid_orders_v2' }],
      [{ schema: 'shop', name: 'big_spenders' }, { schema: 'store', name: 'big_spenders_v2' }],
      [{ schema: 'shop', name: 'self_join' }, { schema: 'store', name: 'self_join_v2' }],
      [{ schema: 'shop', name: 'with_total' }, { schema: 'store', name: 'with_total_v2' }],
      [{ schema: 'shop', name: 'top_regions' }, { schema: 'store', name: 'top_regions_v2' }],
      [{ schema: 'Sales Dept', name: 'Big Items' }, { schema: 'Ventes', name: 'Big Items_v2' }],
    ];
    for (const [s, t] of pairs) {
      const [a, b] = await Promise.all([fingerprint(source, 'postgres', s.schema, s.name), fingerprint(target, 'postgres', t.schema, t.name)]);
      expect(a.rows, `${s.schema}.${s.name}`).toBeGreaterThan(0);
      expect(b, `${t.schema}.${t.name}`).toEqual(a);
    }
    // They read the target's tables, not anything else: a change there shows.
    const before = await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM store.paid_orders_v2`);
    await target.query(`UPDATE store.orders_v2 SET status = 'paid' WHERE id = 1`);
    const after = await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM store.paid_orders_v2`);
    expect(Number(after[0]!.n)).toBe(Number(before[0]!.n) + 1);
    await target.query(`UPDATE store.orders_v2 SET status = 'new' WHERE id = 1`);
  });

  it('refreshes the materialized view (same rows as the source) and creates its index', async () => {
    const [a, b] = await Promise.all([fingerprint(source, 'postgres', 'shop', 'region_sales'), fingerprint(target, 'postgres', 'store', 'region_sales_v2')]);
    expect(a.rows).toBe(4);
    expect(b).toEqual(a);
    const idx = await target.query<{ d: string }>(`SELECT pg_get_indexdef('store.region_sales_region_v2'::regclass) AS d`);
    expect(idx[0]!.d).toBe('CREATE UNIQUE INDEX region_sales_region_v2 ON store.region_sales_v2 USING btree (region)');
  });

  it('functions and the aggregate give the source’s results on the target’s tables', async () => {
    const [s, t] = await Promise.all([
      source.query<{ a: string; b: string }>(`SELECT shop.order_total(7)::text AS a, (SELECT shop.total_of(amount) FROM shop.orders)::text AS b`),
      target.query<{ a: string; b: string }>(`SELECT store.order_total(7)::text AS a, (SELECT store.total_of(amount) FROM store.orders_v2)::text AS b`),
    ]);
    expect(Number(s[0]!.a)).toBeGreaterThan(0);
    expect(t).toEqual(s);
    // The parsed body was renamed: it reads store.orders_v2.
    const def = await target.query<{ d: string }>(`SELECT pg_get_functiondef('store.order_total(integer)'::regprocedure) AS d`);
    expect(def[0]!.d).toContain('FROM store.orders_v2 orders');
    // The row type and search_path of big_customers follow the mapping.
    const big = await target.query<{ d: string }>(`SELECT pg_get_functiondef('store.big_customers(numeric)'::regprocedure) AS d`);
    expect(big[0]!.d).toContain('RETURNS SETOF store.customers_v2');
    expect(big[0]!.d).toContain(`SET search_path TO 'store'`);
    // Its string body now reads the target's tables, through that search_path.
    expect(big[0]!.d).toContain('FROM customers_v2 c WHERE (SELECT sum(amount) FROM orders_v2 o');
    const rows = (q: string) => `SELECT array_agg(id ORDER BY id)::text AS ids FROM ${q}.big_customers(100)`;
    const [bs, bt] = await Promise.all([source.query<{ ids: string }>(rows('shop')), target.query<{ ids: string }>(rows('store'))]);
    expect(bs[0]!.ids).toMatch(/^\{\d/);
    expect(bt).toEqual(bs);
  });

  it('the trigger fires on the target', async () => {
    await target.query(`INSERT INTO store.customers_v2 (id, name, region) VALUES (1000, 'new customer', 'north')`);
    await target.query(`UPDATE store.customers_v2 SET name = 'renamed' WHERE id = 1`);
    const rows = await target.query<{ id: number; name: string; stamped: boolean }>(
      `SELECT id, name, updated_at IS NOT NULL AS stamped FROM store.customers_v2 WHERE id IN (1, 1000) ORDER BY id`,
    );
    expect(rows).toEqual([
      { id: 1, name: 'RENAMED', stamped: true },
      { id: 1000, name: 'NEW CUSTOMER', stamped: true },
    ]);
  });

  it('the audit trigger, rewritten to the renamed tables, logs into the renamed log table on the target', async () => {
    const before = await target.query<{ n: number }>(`SELECT count(*)::int AS n FROM store.orders_v2 WHERE customer_id = (SELECT customer_id FROM store.orders_v2 WHERE id = 5)`);
    await target.query(`UPDATE store.orders_v2 SET amount = amount + 1 WHERE id = 5`);
    await target.query(`UPDATE store.orders_v2 SET amount = amount - 1 WHERE id = 5`);
    const log = await target.query<{ order_id: number; old_amount: string; new_amount: string; orders_of_customer: number; note: string }>(
      `SELECT order_id, old_amount::text, new_amount::text, orders_of_customer, note FROM store.order_audit_v2 ORDER BY id`,
    );
    const amount = (await source.query<{ a: string }>(`SELECT amount::text AS a FROM shop.orders WHERE id = 5`))[0]!.a;
    const plus = (Number(amount) + 1).toFixed(2);
    expect(log).toEqual([
      { order_id: 5, old_amount: amount, new_amount: plus, orders_of_customer: before[0]!.n, note: 'shop.orders changed' },
      { order_id: 5, old_amount: plus, new_amount: amount, orders_of_customer: before[0]!.n, note: 'shop.orders changed' },
    ]);
    // The string literal naming the table was left as written; the source's log is untouched.
    expect(await source.query(`SELECT count(*)::int AS n FROM shop.order_audit`)).toEqual([{ n: 0 }]);
    const def = await target.query<{ d: string }>(`SELECT pg_get_functiondef('store.audit_order()'::regprocedure) AS d`);
    expect(def[0]!.d).toContain('v_amount "store"."orders_v2".amount%TYPE');
    expect(def[0]!.d).toContain('FROM "store"."orders_v2" orders WHERE orders.customer_id');
    expect(def[0]!.d).toContain('INSERT INTO "store"."order_audit_v2" AS order_audit (order_id');
  });

  it('a second run finds everything in place and changes nothing', async () => {
    const again = await migrateSchemaObjects(input);
    expect(again.created).toEqual(first.created);
    expect(again.skipped).toEqual(first.skipped);
    expect(again.rewritten).toEqual(first.rewritten);
    expect(again.notices.join('\n')).toMatch(/16 of these objects were already on the target/);
    const triggers = await target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'store.customers_v2'::regclass AND NOT tgisinternal`);
    expect(triggers[0]!.n).toBe(1);
  });

  it('leaves an object of the same name that is not ours alone, and reports it', async () => {
    await source.query(`CREATE FUNCTION shop.answer() RETURNS int LANGUAGE sql AS 'SELECT 42'`);
    await target.query(`CREATE FUNCTION store.answer() RETURNS int LANGUAGE sql AS 'SELECT 41'`);
    try {
      const r = await migrateSchemaObjects(input);
      expect(r.skipped).toContainEqual({
        object: 'function shop.answer()',
        reason: 'a different function with that name and arguments already exists on the target; left as it is',
      });
      expect((await target.query<{ v: number }>(`SELECT store.answer() AS v`))[0]!.v).toBe(41);
    } finally {
      await source.query(`DROP FUNCTION shop.answer()`);
    }
  });
});

describe('into the same database, with a suffix only', () => {
  it('creates the suffixed views and triggers beside the originals and never replaces a source object', async () => {
    await source.createDatabase('same');
    await source.query(
      `CREATE SCHEMA app;
       CREATE TABLE app.a (id int PRIMARY KEY, n int NOT NULL, touched boolean NOT NULL DEFAULT false);
       INSERT INTO app.a SELECT i, i * 10 FROM generate_series(1, 20) i;
       CREATE VIEW app.big AS SELECT id, n FROM app.a WHERE n > 100;
       CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := true; RETURN NEW; END $$;
       CREATE TRIGGER a_touch BEFORE UPDATE ON app.a FOR EACH ROW EXECUTE FUNCTION app.touch();
       CREATE FUNCTION app.all_a() RETURNS SETOF app.a LANGUAGE sql AS 'SELECT * FROM app.a';`,
      [],
      'same',
    );
    const sourceView = async () => (await source.query<{ d: string }>(`SELECT pg_get_viewdef('app.big'::regclass) AS d`, [], 'same'))[0]!.d;
    const viewBefore = await sourceView();
    const mapping = { schemaMapping: {}, tableSuffix: '_copy' };
    const uri = source.uri('same');
    const spec = normalizeSpec({ source: uri, target: uri, schemas: ['app'], ...mapping });
    const defs = await createTargetTables({ spec, tables: [{ source: { schema: 'app', name: 'a' }, target: { schema: 'app', name: 'a_copy' }, estimatedRows: 20 }] });
    await copyTable({ source: uri, target: uri, table: { source: defs[0]!.source, target: defs[0]!.target, copyColumns: defs[0]!.copyColumns } }, { heartbeat: () => undefined, signal: new AbortController().signal });
    await finishTargetTables({ target: uri, defs });

    const r = await migrateSchemaObjects({ source: uri, target: uri, schemas: ['app'], tables: [{ source: defs[0]!.source, target: defs[0]!.target }], ...mapping });
    expect(r.created).toEqual(['function app.touch()', 'view app.big -> app.big_copy', 'trigger a_touch on app.a -> app.a_copy']);
    // all_a returns app.a's rows; the copy's version would return app.a_copy's: it cannot take its place.
    expect(r.skipped).toEqual([{ object: 'function app.all_a()', reason: 'a different function with that name and arguments already exists on the target; left as it is' }]);
    expect(await sourceView()).toBe(viewBefore);
    const fp = async (t: string) => fingerprint(source, 'same', 'app', t);
    expect(await fp('big_copy')).toEqual(await fp('big'));
    await source.query(`UPDATE app.a_copy SET n = n + 1 WHERE id = 1`, [], 'same');
    expect(await source.query(`SELECT touched FROM app.a_copy WHERE id = 1`, [], 'same')).toEqual([{ touched: true }]);
    expect(await source.query(`SELECT touched FROM app.a WHERE id = 1`, [], 'same')).toEqual([{ touched: false }]);
  });
});

const PAGILA = path.resolve(__dirname, '../../../shared/data/pagila');
const pagilaPresent = existsSync(path.join(PAGILA, 'pagila-schema.sql')) && existsSync(path.join(PAGILA, 'pagila-data.sql'));
if (!pagilaPresent) {
  // eslint-disable-next-line no-console
  console.warn(`objects.test: pagila part skipped, the pagila sample database is not at ${PAGILA}`);
}

function psqlBinary(): string {
  for (const p of [process.env.PG_BIN_DIR && path.join(process.env.PG_BIN_DIR, 'psql'), '/usr/lib/postgresql/15/bin/psql']) {
    if (p && existsSync(p)) return p;
  }
  return 'psql';
}

describe.skipIf(!pagilaPresent)('pagila: its views, functions, aggregate and triggers', () => {
  let result: SchemaObjectsResult;

  beforeAll(async () => {
    await Promise.all([source.createDatabase('pagila'), target.createDatabase('pagila')]);
    for (const f of ['pagila-schema.sql', 'pagila-data.sql']) {
      await promisify(execFile)(psqlBinary(), [source.uri('pagila'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', path.join(PAGILA, f)], { maxBuffer: 64 * 1024 * 1024 });
    }
    // pagila creates it WITH NO DATA; a live database would have it populated (an unpopulated one stays so).
    await source.query('REFRESH MATERIALIZED VIEW public.rental_by_category', [], 'pagila');
    const mapping = { schemaMapping: { public: 'app' }, tableSuffix: '_m' };
    const { spec, tables } = await migrateTables(source, target, 'pagila', { schemas: ['public'], ...mapping });
    result = await migrateSchemaObjects({ source: spec.source, target: spec.target, schemas: ['public'], tables, ...mapping });
  });

  it('creates all of them but the SECURITY DEFINER function, which would be owned by a superuser', async () => {
    expect(result.skipped.map((x) => x.object)).toEqual(['function public.rewards_report(integer,numeric)']);
    expect(result.skipped[0]!.reason).toMatch(/^SECURITY DEFINER: its owner on the target would be "postgres", a superuser/);
    const kinds = (k: string) => result.created.filter((c) => c.startsWith(`${k} `)).length;
    expect(kinds('view')).toBe(7);
    expect(kinds('materialized')).toBe(1);
    expect(kinds('aggregate')).toBe(1);
    expect(kinds('trigger')).toBe(15);
    const fns = await source.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prokind <> 'a' AND NOT p.prosecdef
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')`,
      [],
      'pagila',
    );
    expect(kinds('function')).toBe(fns[0]!.n);
  });

  it('every view and the materialized view return the source’s rows', async () => {
    const views = await source.query<{ name: string }>(
      `SELECT relname::text AS name FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('v', 'm') ORDER BY 1`,
      [],
      'pagila',
    );
    expect(views.length).toBe(8);
    for (const { name } of views) {
      // group_concat has no ORDER BY: compare those views' rows by everything but the concatenation.
      const cols = (
        await source.query<{ a: string }>(
          `SELECT attname::text AS a FROM pg_attribute WHERE attrelid = ('public.' || quote_ident($1))::regclass AND attnum > 0 AND atttypid <> 'text'::regtype ORDER BY attnum`,
          [name],
          'pagila',
        )
      ).map((r) => r.a);
      const [a, b] = await Promise.all([fingerprint(source, 'pagila', 'public', name, cols), fingerprint(target, 'pagila', 'app', `${name}_m`, cols)]);
      expect(a.rows, name).toBeGreaterThan(0);
      expect(b, name).toEqual(a);
    }
  });

  it('string bodies follow the mapping: inventory_in_stock and the functions using it return the source’s results', async () => {
    expect(result.rewritten).toContain('function public.inventory_in_stock(integer): its body now names public.inventory -> app.inventory_m, public.rental -> app.rental_m');
    expect(result.rewritten).toContain('function public.film_in_stock(integer,integer): its body now names public.inventory -> app.inventory_m');
    // inventory_in_stock is no longer reported; rewards_report's SQL built at run time is, with what it names.
    expect(result.notices.filter((n) => n.includes('inventory_in_stock(integer):'))).toEqual([]);
    expect(result.notices.join('\n')).toMatch(/function public\.rewards_report\(integer,numeric\): it builds SQL at run time \(EXECUTE\) naming public\.customer, public\.payment/);

    const calls = (s: string) => `
      SELECT (SELECT array_agg(i.inventory_id ORDER BY i.inventory_id) FILTER (WHERE NOT ${s}.inventory_in_stock(i.inventory_id))::text FROM ${s}.inventory${s === 'app' ? '_m' : ''} i) AS out_of_stock,
             (SELECT array_agg(coalesce(${s}.inventory_held_by_customer(g), -1) ORDER BY g)::text FROM generate_series(1, 300) g) AS held,
             (SELECT array_agg(x ORDER BY f, st, x)::text FROM generate_series(1, 40) f, generate_series(1, 2) st, ${s}.film_in_stock(f, st) x) AS in_stock,
             (SELECT array_agg(x ORDER BY f, st, x)::text FROM generate_series(1, 40) f, generate_series(1, 2) st, ${s}.film_not_in_stock(f, st) x) AS not_in_stock,
             ${s}.last_day('2022-02-10 12:00+00'::timestamptz)::text AS last_day`;
    const s = await source.query<Record<string, string>>(calls('public'), [], 'pagila');
    expect(s[0]!.last_day).toBe('2022-02-28');
    expect(s[0]!.out_of_stock).toMatch(/^\{\d/);
    expect(s[0]!.in_stock).toMatch(/^\{\d/);
    expect(s[0]!.not_in_stock).toMatch(/^\{\d/);
    const c = await target.client('pagila');
    try {
      // film_in_stock calls inventory_in_stock by its bare name: function calls follow the caller's search_path.
      await c.query('SET search_path = app');
      const t = await c.query<Record<string, string>>(calls('app'));
      expect(t.rows).toEqual(s);
      // They read the target's tables: returning a rental there puts the item back in stock.
      const out = Number(/^\{(\d+)/.exec(s[0]!.out_of_stock!)![1]);
      await c.query('BEGIN');
      await c.query('UPDATE app.rental_m SET return_date = now() WHERE inventory_id = $1 AND return_date IS NULL', [out]);
      expect((await c.query<{ s: boolean }>('SELECT app.inventory_in_stock($1) AS s', [out])).rows[0]!.s).toBe(true);
      await c.query('ROLLBACK');
      await c.query(`UPDATE app.actor_m SET first_name = first_name WHERE actor_id = 1`);
      const stamped = await c.query<{ fresh: boolean }>(`SELECT last_update > now() - interval '1 minute' AS fresh FROM app.actor_m WHERE actor_id = 1`);
      expect(stamped.rows[0]!.fresh).toBe(true);
    } finally {
      await c.end();
    }
  });
});
