/**
 * The pure half of activities/objects.ts: lexing PostgreSQL's printed definitions and renaming the
 * relations, functions and types in them through the mapping. Inputs are what PostgreSQL 15 prints
 * (pg_get_viewdef / pg_get_functiondef / pg_get_triggerdef with search_path = '').
 */
import { describe, expect, it } from 'vitest';
import {
  aggregateDdl,
  bodyMentions,
  lexSql,
  nameKey,
  orderByDependencies,
  planSchemaObjects,
  rewriteFunctionDefinition,
  rewriteQueryText,
  rewriteSignature,
  rewriteTriggerDefinition,
  sameDefinition,
  viewDdl,
  withOptions,
  type CatalogView,
  type ObjectCatalog,
  type ObjectRenames,
  type PlannedObject,
} from '../../activities/objects';
import type { QualifiedName } from '../../activities/spec';

const q = (schema: string, name: string): QualifiedName => ({ schema, name });
const map = (pairs: Array<[QualifiedName, QualifiedName]>) => new Map(pairs.map(([s, t]) => [nameKey(s), t]));

// shop -> store, suffix _v2
const renames: ObjectRenames = {
  relations: map([
    [q('shop', 'customers'), q('store', 'customers_v2')],
    [q('shop', 'orders'), q('store', 'orders_v2')],
    [q('shop', 'region_sales'), q('store', 'region_sales_v2')],
    [q('Sales Dept', 'Order Items'), q('Ventes', 'Order Items_v2')],
  ]),
  functions: map([
    [q('shop', 'touch'), q('store', 'touch')],
    [q('shop', 'order_total'), q('store', 'order_total')],
    [q('shop', 'big_customers'), q('store', 'big_customers')],
    [q('shop', 'sum_sfunc'), q('store', 'sum_sfunc')],
  ]),
  types: map([
    [q('shop', 'status'), q('store', 'status')],
    [q('shop', 'customers'), q('store', 'customers_v2')],
  ]),
  schemaMapping: { shop: 'store' },
};

describe('lexSql', () => {
  it('gives the input back exactly and keeps strings, quoted names, dollar quotes and comments whole', () => {
    const sql = `SELECT 'it''s shop.orders', E'a\\'b', "Odd ""name""".x, $f$ shop.orders $f$, $1, 1.5e3 -- shop.orders\n /* a /* nested */ comment */ x::shop.status[]`;
    const tokens = lexSql(sql);
    expect(tokens.map((t) => t.text).join('')).toBe(sql);
    const kinds = tokens.filter((t) => t.kind !== 'space').map((t) => [t.kind, t.text]);
    expect(kinds).toContainEqual(['string', "'it''s shop.orders'"]);
    expect(kinds).toContainEqual(['string', "E'a\\'b'"]);
    expect(kinds).toContainEqual(['quoted', '"Odd ""name"""']);
    expect(kinds).toContainEqual(['dollar', '$f$ shop.orders $f$']);
    expect(kinds).toContainEqual(['param', '$1']);
    expect(kinds).toContainEqual(['number', '1.5e3']);
    expect(kinds).toContainEqual(['comment', '-- shop.orders']);
    expect(kinds).toContainEqual(['comment', '/* a /* nested */ comment */']);
    expect(kinds).toContainEqual(['op', '::']);
  });
});

describe('rewriteQueryText (views)', () => {
  it('renames aliased relations and leaves their aliases alone', () => {
    const def = ` SELECT c.id,
    c.name,
    sum(o.amount) AS total
   FROM (shop.customers c
     JOIN shop.orders o ON ((o.customer_id = c.id)))
  GROUP BY c.id, c.name;`;
    expect(rewriteQueryText(def, renames)).toBe(` SELECT c.id,
    c.name,
    sum(o.amount) AS total
   FROM ("store"."customers_v2" c
     JOIN "store"."orders_v2" o ON ((o.customer_id = c.id)))
  GROUP BY c.id, c.name;`);
  });

  it('keeps the old name as an alias where column references use it, and renames casts to moved types', () => {
    const def = ` SELECT orders.id,
    orders.status
   FROM shop.orders
  WHERE (orders.status = 'paid'::shop.status);`;
    expect(rewriteQueryText(def, renames)).toBe(` SELECT orders.id,
    orders.status
   FROM "store"."orders_v2" "orders"
  WHERE (orders.status = 'paid'::"store"."status");`);
  });

  it('renames in subqueries, after commas in the FROM list, and function calls', () => {
    const def = ` SELECT customers.id,
    shop.order_total(customers.id) AS total,
    ( SELECT count(*) AS count
           FROM shop.orders
          WHERE (orders.customer_id = customers.id)) AS n
   FROM shop.orders a,
    shop.customers;`;
    expect(rewriteQueryText(def, renames)).toBe(` SELECT customers.id,
    "store"."order_total"(customers.id) AS total,
    ( SELECT count(*) AS count
           FROM "store"."orders_v2" "orders"
          WHERE (orders.customer_id = customers.id)) AS n
   FROM "store"."orders_v2" a,
    "store"."customers_v2" "customers";`);
  });

  it('never touches string literals, column references that look like a table, or other tables', () => {
    const def = ` SELECT shop.orders, 'shop.orders'::text AS t, x.y
   FROM public.other shop
  WHERE (shop.orders IS DISTINCT FROM shop.customers);`;
    expect(rewriteQueryText(def, renames)).toBe(def);
  });

  it('handles names with spaces and quotes, and an alias that is a quoted identifier', () => {
    expect(rewriteQueryText(`SELECT "Order Items".x FROM "Sales Dept"."Order Items"`, renames)).toBe(
      `SELECT "Order Items".x FROM "Ventes"."Order Items_v2" "Order Items"`,
    );
    expect(rewriteQueryText(`SELECT "My Alias".x FROM "Sales Dept"."Order Items" "My Alias"`, renames)).toBe(
      `SELECT "My Alias".x FROM "Ventes"."Order Items_v2" "My Alias"`,
    );
  });

  it('needs no alias when only the schema changes', () => {
    const schemaOnly: ObjectRenames = { ...renames, relations: map([[q('shop', 'orders'), q('store', 'orders')]]) };
    expect(rewriteQueryText('SELECT orders.id FROM shop.orders', schemaOnly)).toBe('SELECT orders.id FROM "store"."orders"');
  });
});

describe('rewriteFunctionDefinition', () => {
  it('renames the function, SETOF row types and search_path schemas, and keeps a string body as written', () => {
    const def = `CREATE OR REPLACE FUNCTION shop.big_customers(min numeric DEFAULT 0)
 RETURNS SETOF shop.customers
 LANGUAGE sql
 SET search_path TO 'shop', 'public'
AS $function$ SELECT * FROM customers c WHERE (SELECT sum(amount) FROM shop.orders o WHERE o.customer_id = c.id) > min $function$
`;
    expect(rewriteFunctionDefinition(def, renames)).toBe(`CREATE OR REPLACE FUNCTION "store"."big_customers"(min numeric DEFAULT 0)
 RETURNS SETOF "store"."customers_v2"
 LANGUAGE sql
 SET search_path TO 'store', 'public'
AS $function$ SELECT * FROM customers c WHERE (SELECT sum(amount) FROM shop.orders o WHERE o.customer_id = c.id) > min $function$
`);
    expect(bodyMentions(def, renames)).toEqual(['shop.customers', 'shop.orders']);
  });

  it('renames an SQL-standard body like a query, DML targets included', () => {
    const def = `CREATE OR REPLACE FUNCTION shop.ins(p integer)
 RETURNS void
 LANGUAGE sql
BEGIN ATOMIC
 INSERT INTO shop.orders (id, amount)
   VALUES (ins.p, (1)::numeric);
 UPDATE shop.orders SET amount = 1
   WHERE (orders.id = ins.p);
 DELETE FROM shop.customers
   WHERE (customers.id = shop.order_total(ins.p));
END
`;
    expect(rewriteFunctionDefinition(def, renames)).toBe(`CREATE OR REPLACE FUNCTION shop.ins(p integer)
 RETURNS void
 LANGUAGE sql
BEGIN ATOMIC
 INSERT INTO "store"."orders_v2" AS "orders" (id, amount)
   VALUES (ins.p, (1)::numeric);
 UPDATE "store"."orders_v2" "orders" SET amount = 1
   WHERE (orders.id = ins.p);
 DELETE FROM "store"."customers_v2" "customers"
   WHERE (customers.id = "store"."order_total"(ins.p));
END
`);
    expect(bodyMentions(def, renames)).toEqual([]);
  });

  it('renames types in a signature', () => {
    expect(rewriteSignature('shop.big_customers(numeric)', renames)).toBe('"store"."big_customers"(numeric)');
    expect(rewriteSignature('shop.touch(shop.status,shop.status[],shop.customers)', renames)).toBe(
      '"store"."touch"("store"."status","store"."status"[],"store"."customers_v2")',
    );
  });
});

describe('rewriteTriggerDefinition', () => {
  it('renames the table and the function, not the trigger or what WHEN says', () => {
    const r = rewriteTriggerDefinition(
      `CREATE TRIGGER customers_touch BEFORE INSERT OR UPDATE OF name ON shop.customers FOR EACH ROW WHEN ((new.name IS DISTINCT FROM 'x'::text)) EXECUTE FUNCTION shop.touch()`,
      renames,
    );
    expect(r.text).toBe(
      `CREATE TRIGGER customers_touch BEFORE INSERT OR UPDATE OF name ON "store"."customers_v2" FOR EACH ROW WHEN ((new.name IS DISTINCT FROM 'x'::text)) EXECUTE FUNCTION "store"."touch"()`,
    );
    expect(r.table).toEqual(q('shop', 'customers'));
  });

  it('renames a constraint trigger’s FROM table and leaves built-in functions alone', () => {
    const r = rewriteTriggerDefinition(
      `CREATE CONSTRAINT TRIGGER t AFTER INSERT ON shop.orders FROM shop.customers NOT DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION tsvector_update_trigger('fulltext', 'pg_catalog.english', 'title')`,
      renames,
    );
    expect(r.text).toBe(
      `CREATE CONSTRAINT TRIGGER t AFTER INSERT ON "store"."orders_v2" FROM "store"."customers_v2" NOT DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION tsvector_update_trigger('fulltext', 'pg_catalog.english', 'title')`,
    );
    expect(r.table).toEqual(q('shop', 'orders'));
  });
});

describe('sameDefinition', () => {
  it('ignores quoting style, whitespace and a trailing semicolon, not content', () => {
    expect(sameDefinition(' SELECT a.id\n   FROM app.t a;', 'SELECT a.id FROM "app"."t" "a"')).toBe(true);
    expect(sameDefinition('SELECT 1 FROM app.t', 'SELECT 2 FROM app.t')).toBe(false);
    expect(sameDefinition(`SELECT 'a' FROM app.t`, `SELECT 'A' FROM app.t`)).toBe(false);
    expect(sameDefinition('SELECT x FROM "App".t', 'SELECT x FROM app.t')).toBe(false);
  });
});

describe('DDL', () => {
  const matview: CatalogView = {
    oid: 1,
    schema: 'shop',
    name: 'region_sales',
    kind: 'm',
    definition: ' SELECT customers.region,\n    count(*) AS n\n   FROM shop.customers\n  GROUP BY customers.region;',
    options: ['fillfactor=70'],
    populated: true,
    accessMethod: 'heap',
    indexes: [{ name: 'region_sales_region', definition: 'CREATE UNIQUE INDEX region_sales_region ON shop.region_sales USING btree (region)' }],
  };

  it('creates a materialized view WITH NO DATA, then its indexes under suffixed names', () => {
    const ddl = viewDdl(matview, q('store', 'region_sales_v2'), renames, { tableSuffix: '_v2' });
    expect(ddl.statements).toEqual([
      'CREATE MATERIALIZED VIEW "store"."region_sales_v2" WITH (fillfactor=70) AS\n SELECT customers.region,\n    count(*) AS n\n   FROM "store"."customers_v2" "customers"\n  GROUP BY customers.region\nWITH NO DATA',
      'CREATE UNIQUE INDEX IF NOT EXISTS "region_sales_region_v2" ON "store"."region_sales_v2" USING btree (region)',
    ]);
  });

  it('creates a view with its options', () => {
    const ddl = viewDdl({ ...matview, kind: 'v', options: ['check_option=local', 'security_barrier=true'], indexes: [] }, q('store', 'v'), renames, { tableSuffix: '' });
    expect(ddl.statements[0]).toMatch(/^CREATE VIEW "store"."v" WITH \(check_option=local, security_barrier=true\) AS\n SELECT/);
    expect(withOptions(['a=some value'])).toBe(` WITH (a='some value')`);
  });

  it('builds CREATE OR REPLACE AGGREGATE from pg_aggregate, functions and types renamed', () => {
    const ddl = aggregateDdl(
      {
        kind: 'n',
        args: 'shop.status, numeric',
        transfn: q('shop', 'sum_sfunc'),
        finalfn: q('pg_catalog', 'numeric_avg'),
        finalExtra: false,
        mfinalExtra: false,
        finalModify: 'r',
        mfinalModify: 'r',
        sortop: q('pg_catalog', '>'),
        stype: 'numeric',
        sspace: 0,
        msspace: 0,
        initcond: "it's 0",
        minitcond: null,
        parallel: 's',
      },
      q('store', 'my_sum'),
      renames,
    );
    expect(ddl).toBe(
      `CREATE OR REPLACE AGGREGATE "store"."my_sum"("store"."status", numeric) (\n` +
        `  SFUNC = "store"."sum_sfunc",\n  STYPE = numeric,\n  FINALFUNC = "pg_catalog"."numeric_avg",\n  FINALFUNC_MODIFY = READ_ONLY,\n` +
        `  INITCOND = 'it''s 0',\n  SORTOP = OPERATOR("pg_catalog".>),\n  PARALLEL = SAFE\n)`,
    );
  });
});

describe('planning', () => {
  const base = (): ObjectCatalog => ({
    migrated: [
      { oid: 10, source: q('shop', 'customers'), target: q('store', 'customers_v2') },
      { oid: 11, source: q('shop', 'orders'), target: q('store', 'orders_v2') },
    ],
    functions: [
      {
        oid: 20,
        schema: 'shop',
        name: 'touch',
        kind: 'f',
        signature: 'shop.touch()',
        definition: 'CREATE OR REPLACE FUNCTION shop.touch()\n RETURNS trigger\n LANGUAGE plpgsql\nAS $function$ BEGIN RETURN NEW; END $function$\n',
      },
    ],
    views: [
      { oid: 30, schema: 'shop', name: 'top', kind: 'v', definition: ' SELECT t.id FROM shop.totals t;', options: [], populated: true, accessMethod: null, indexes: [] },
      { oid: 31, schema: 'shop', name: 'totals', kind: 'm', definition: ' SELECT orders.id FROM shop.orders;', options: [], populated: true, accessMethod: 'heap', indexes: [] },
      { oid: 32, schema: 'shop', name: 'notes_view', kind: 'v', definition: ' SELECT n.id FROM shop.notes n;', options: [], populated: true, accessMethod: null, indexes: [] },
    ],
    triggers: [
      {
        oid: 40,
        name: 'touch',
        relid: 10,
        table: q('shop', 'customers'),
        definition: 'CREATE TRIGGER touch BEFORE UPDATE ON shop.customers FOR EACH ROW EXECUTE FUNCTION shop.touch()',
        enabled: 'D',
      },
    ],
    schemaTypes: [],
    dependencies: [
      { object: 'v:30', kind: 'class', oid: 31 },
      { object: 'v:31', kind: 'class', oid: 11 },
      { object: 'v:32', kind: 'class', oid: 12 },
      { object: 't:40', kind: 'proc', oid: 20 },
    ],
    relations: [{ oid: 12, schema: 'shop', name: 'notes', relkind: 'r' }],
    procs: [{ oid: 20, schema: 'shop', name: 'touch', signature: 'shop.touch()' }],
    types: [],
  });

  it('orders by dependency, functions first and triggers last, and names what each needs', () => {
    const plan = planSchemaObjects(base(), { schemaMapping: { shop: 'store' }, tableSuffix: '_v2' });
    expect(plan.map((o) => o.createdLabel)).toEqual([
      'function shop.touch() -> store.touch',
      'materialized view shop.totals -> store.totals_v2',
      'view shop.notes_view -> store.notes_view_v2',
      'view shop.top -> store.top_v2',
      'trigger touch on shop.customers -> store.customers_v2',
    ]);
    const byLabel = new Map(plan.map((o) => [o.label, o]));
    expect(byLabel.get('view shop.top')!.dependsOn).toEqual(['v:31']);
    expect(byLabel.get('view shop.top')!.statements[1]).toBe('CREATE VIEW "store"."top_v2" AS\n SELECT t.id FROM "store"."totals_v2" t');
    expect(byLabel.get('materialized view shop.totals')!.refresh).toBe('REFRESH MATERIALIZED VIEW "store"."totals_v2"');
    expect(byLabel.get('view shop.notes_view')!.requires).toEqual([
      { kind: 'relation', lookup: '"shop"."notes"', reason: 'uses table shop.notes, which is not migrated and does not exist on the target' },
    ]);
    const trigger = byLabel.get('trigger touch on shop.customers')!;
    expect(trigger.dependsOn).toEqual(['f:20']);
    expect(trigger.statements).toEqual([
      'CREATE TRIGGER touch BEFORE UPDATE ON "store"."customers_v2" FOR EACH ROW EXECUTE FUNCTION "store"."touch"()',
      'ALTER TABLE "store"."customers_v2" DISABLE TRIGGER "touch"',
    ]);
    expect(trigger.existing).toEqual({ kind: 'trigger', table: q('store', 'customers_v2'), name: 'touch' });
  });

  it('refuses a view name the suffix makes too long, before touching the target', () => {
    const cat = base();
    cat.views[0]!.name = 'x'.repeat(62);
    const plan = planSchemaObjects(cat, { schemaMapping: {}, tableSuffix: '_v2' });
    expect(plan.find((o) => o.key === 'v:30')!.problem).toMatch(/longer than 63 bytes/);
  });

  it('puts objects in a dependency cycle last', () => {
    const o = (key: string, dependsOn: string[]): PlannedObject => ({
      key,
      kind: 'view',
      label: key,
      createdLabel: key,
      statements: [],
      ensure: [],
      existing: { kind: 'relation', name: q('s', key), relkind: 'v' },
      compareText: '',
      dependsOn,
      requires: [],
    });
    expect(orderByDependencies([o('a', ['b']), o('b', ['a']), o('c', [])]).map((x) => x.key)).toEqual(['c', 'a', 'b']);
  });
});
