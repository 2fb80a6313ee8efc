/**
 * The pure half of activities/objects/: lexing PostgreSQL's printed definitions and renaming the
 * relations, functions and types in them through the mapping. Inputs are what PostgreSQL 15 prints
 * (pg_get_viewdef / pg_get_functiondef / pg_get_triggerdef with search_path = '').
 */
import { describe, expect, it } from 'vitest';
import { aggregateDdl, viewDdl, withOptions, type CatalogView } from '../../activities/objects/ddl';
import { dollarQuote, rewriteFunction, rewriteFunctionDefinition } from '../../activities/objects/function-body';
import { lexSql, sameDefinition } from '../../activities/objects/lexer';
import { orderByDependencies, planSchemaObjects, type ObjectCatalog, type PlannedObject } from '../../activities/objects/plan';
import { rewriteQueryText, rewriteSignature, rewriteTriggerDefinition, type ObjectRenames } from '../../activities/objects/rename';
import { nameKey } from '../../activities/naming';
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
  it('renames the function, SETOF row types and search_path schemas, and the string body through the mapped search_path', () => {
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
AS $function$ SELECT * FROM customers_v2 c WHERE (SELECT sum(amount) FROM "store"."orders_v2" o WHERE o.customer_id = c.id) > min $function$
`);
    const r = rewriteFunction(def, renames);
    expect(r.rewritten).toEqual(['shop.customers -> store.customers_v2', 'shop.orders -> store.orders_v2']);
    expect(r.notFollowed).toEqual([]);
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
    expect(rewriteFunction(def, renames).rewritten).toEqual([]);
  });

  it('renames types in a signature', () => {
    expect(rewriteSignature('shop.big_customers(numeric)', renames)).toBe('"store"."big_customers"(numeric)');
    expect(rewriteSignature('shop.touch(shop.status,shop.status[],shop.customers)', renames)).toBe(
      '"store"."touch"("store"."status","store"."status"[],"store"."customers_v2")',
    );
  });
});

describe('string bodies (SQL and PL/pgSQL written as strings)', () => {
  // pagila-like: public -> app, suffix _m
  const tables = ['rental', 'inventory', 'film', 'payment', 'customer', 'audit_log'];
  const pagila: ObjectRenames = {
    relations: map(tables.map((n) => [q('public', n), q('app', `${n}_m`)])),
    functions: map([[q('public', 'inventory_in_stock'), q('app', 'inventory_in_stock')]]),
    types: map(tables.map((n) => [q('public', n), q('app', `${n}_m`)])),
    schemaMapping: { public: 'app' },
  };
  const fn = (body: string, header = ' RETURNS boolean\n LANGUAGE plpgsql\n') => `CREATE OR REPLACE FUNCTION public.f(p_id integer)\n${header}AS $function$${body}$function$\n`;
  const bodyOf = (def: string) => def.slice(def.indexOf('AS ') + 3).trim();

  it('renames pagila’s inventory_in_stock: bare names qualified, the old name kept as alias, comments left alone', () => {
    const body = `
DECLARE
    v_rentals INTEGER;
BEGIN
    -- AN ITEM IS IN-STOCK IF THERE ARE EITHER NO ROWS IN THE rental TABLE
    SELECT count(*) INTO v_rentals
    FROM rental
    WHERE inventory_id = p_inventory_id;

    SELECT COUNT(rental_id) INTO v_out
    FROM inventory LEFT JOIN rental USING(inventory_id)
    WHERE inventory.inventory_id = p_inventory_id
    AND rental.return_date IS NULL;
END `;
    const r = rewriteFunction(fn(body), pagila);
    expect(bodyOf(r.text)).toBe(`$function$
DECLARE
    v_rentals INTEGER;
BEGIN
    -- AN ITEM IS IN-STOCK IF THERE ARE EITHER NO ROWS IN THE rental TABLE
    SELECT count(*) INTO v_rentals
    FROM "app"."rental_m" rental
    WHERE inventory_id = p_inventory_id;

    SELECT COUNT(rental_id) INTO v_out
    FROM "app"."inventory_m" inventory LEFT JOIN "app"."rental_m" rental USING(inventory_id)
    WHERE inventory.inventory_id = p_inventory_id
    AND rental.return_date IS NULL;
END $function$`);
    expect(r.rewritten).toEqual(['public.inventory -> app.inventory_m', 'public.rental -> app.rental_m']);
    expect(r.notFollowed).toEqual([]);
    expect(r.dynamic).toEqual([]);
  });

  it('keeps aliases, renames %ROWTYPE / %TYPE, DML targets, comma lists, TABLE and schema.table.column, and nothing else', () => {
    const body = `
DECLARE
  rec rental%ROWTYPE;
  v_id public.rental.rental_id%TYPE;
  v_inv inventory.inventory_id%TYPE;
  film text := 'rental % was not found in FROM rental';
  n int;
BEGIN
  /* UPDATE rental SET x = 1 */
  SELECT r.* INTO rec FROM public.rental r WHERE r.rental_id = p_id;
  SELECT count(*) INTO n FROM film f, inventory, Rental AS x WHERE f.film_id = inventory.film_id AND extract(year FROM x.rental_date) > 2000;
  SELECT public.rental.rental_id INTO v_id FROM public.rental;
  UPDATE rental SET return_date = now() WHERE rental.rental_id = p_id;
  UPDATE inventory i SET last_update = now() WHERE i.inventory_id = rec.inventory_id;
  INSERT INTO audit_log (film, note) VALUES (film, 'rental');
  INSERT INTO audit_log AS a SELECT * FROM audit_log WHERE a.film IS NULL;
  DELETE FROM payment WHERE payment.rental_id = p_id;
  FOR rec IN SELECT * FROM rental WHERE rental.customer_id = 1 loop
    RAISE NOTICE 'film % rental', rec.film;
  END LOOP;
  PERFORM 1 FROM (TABLE customer) c;
  RETURN EXISTS (SELECT 1 FROM inventory WHERE inventory_id = p_id);
END `;
    const r = rewriteFunction(fn(body), pagila);
    expect(bodyOf(r.text)).toBe(`$function$
DECLARE
  rec "app"."rental_m"%ROWTYPE;
  v_id "app"."rental_m".rental_id%TYPE;
  v_inv "app"."inventory_m".inventory_id%TYPE;
  film text := 'rental % was not found in FROM rental';
  n int;
BEGIN
  /* UPDATE rental SET x = 1 */
  SELECT r.* INTO rec FROM "app"."rental_m" r WHERE r.rental_id = p_id;
  SELECT count(*) INTO n FROM "app"."film_m" f, "app"."inventory_m" inventory, "app"."rental_m" AS x WHERE f.film_id = inventory.film_id AND extract(year FROM x.rental_date) > 2000;
  SELECT rental.rental_id INTO v_id FROM "app"."rental_m" rental;
  UPDATE "app"."rental_m" rental SET return_date = now() WHERE rental.rental_id = p_id;
  UPDATE "app"."inventory_m" i SET last_update = now() WHERE i.inventory_id = rec.inventory_id;
  INSERT INTO "app"."audit_log_m" AS audit_log (film, note) VALUES (film, 'rental');
  INSERT INTO "app"."audit_log_m" AS a SELECT * FROM "app"."audit_log_m" audit_log WHERE a.film IS NULL;
  DELETE FROM "app"."payment_m" payment WHERE payment.rental_id = p_id;
  FOR rec IN SELECT * FROM "app"."rental_m" rental WHERE rental.customer_id = 1 loop
    RAISE NOTICE 'film % rental', rec.film;
  END LOOP;
  PERFORM 1 FROM (TABLE "app"."customer_m") c;
  RETURN EXISTS (SELECT 1 FROM "app"."inventory_m" inventory WHERE inventory_id = p_id);
END $function$`);
    // 'rental' on its own is a literal that is exactly a renamed table's name: said, not changed.
    expect(r.notFollowed).toEqual(['public.rental']);
    expect(r.dynamic).toEqual([]);
  });

  it('leaves CTEs, temporary tables, columns and variables named like a table, and other languages alone', () => {
    const body = `
DECLARE
  rental record;
  v rental.rental_id%TYPE;
BEGIN
  CREATE TEMP TABLE payment (x int);
  INSERT INTO payment SELECT 1;
  WITH film AS (SELECT 1 AS film) SELECT film.film INTO v FROM film;
  SELECT customer INTO v FROM audit_log;
  RETURN true;
END `;
    const r = rewriteFunction(fn(body), pagila);
    expect(bodyOf(r.text)).toBe(`$function$${body.replace('FROM audit_log;', 'FROM "app"."audit_log_m" audit_log;')}$function$`);
    expect(r.notFollowed).toEqual([]);

    const c = `CREATE OR REPLACE FUNCTION public.c(integer)\n RETURNS integer\n LANGUAGE c\nAS '$libdir/rental', $function$rental$function$\n`;
    expect(rewriteFunction(c, pagila)).toEqual({ text: c, rewritten: [], notFollowed: [], dynamic: [] });
    const py = fn(`return plpy.execute("SELECT 1 FROM rental")`, ' RETURNS integer\n LANGUAGE plpython3u\n');
    const rp = rewriteFunction(py, pagila);
    expect(bodyOf(rp.text)).toBe(bodyOf(py));
    expect(rp.notFollowed).toEqual(['public.rental']);
    expect(rp.unreadLanguage).toBe('plpython3u');
  });

  it('reports SQL built at run time and changes none of it', () => {
    const body = `
DECLARE n int;
BEGIN
  EXECUTE 'SELECT count(*) FROM customer WHERE x = $1' INTO n USING p_id;
  EXECUTE format('DELETE FROM %I WHERE x = %L', 'payment', p_id);
  RETURN n > 0;
END `;
    const r = rewriteFunction(fn(body), pagila);
    expect(bodyOf(r.text)).toBe(`$function$${body}$function$`);
    expect(r.rewritten).toEqual([]);
    expect(r.dynamic).toEqual(['public.customer']);
    expect(r.notFollowed).toEqual(['public.payment']);
  });

  it('re-quotes: a single-quoted SQL body doubles its quotes, a dollar quote gets a tag the new body does not contain', () => {
    const sql = `CREATE FUNCTION public.n()\n RETURNS bigint\n LANGUAGE sql\nAS 'SELECT count(*) FROM rental WHERE note <> ''rental''; -- it''s'\n`;
    expect(rewriteFunction(sql, pagila).text).toBe(
      `CREATE FUNCTION public.n()\n RETURNS bigint\n LANGUAGE sql\nAS 'SELECT count(*) FROM "app"."rental_m" rental WHERE note <> ''rental''; -- it''s'\n`,
    );
    const tricky = fn(` SELECT '$function' FROM rental `, ' RETURNS text\n LANGUAGE sql\n').replace(/\$function\$/g, '$functionx$');
    expect(bodyOf(rewriteFunction(tricky, pagila).text)).toBe(`$functionx$ SELECT '$function' FROM "app"."rental_m" rental $functionx$`);
    expect(dollarQuote('a $functionx b')).toBe('$functionxx$a $functionx b$functionxx$');
    expect(lexSql(dollarQuote('x $function')).length).toBe(1);
  });

  it('looks bare names up on the function’s search_path: mapped path keeps them bare, an earlier table shadows', () => {
    const own = fn(` SELECT count(*) FROM rental `, ` RETURNS bigint\n LANGUAGE sql\n SET search_path TO 'public'\n`);
    const r = rewriteFunction(own, pagila);
    expect(r.text).toContain(`SET search_path TO 'app'`);
    expect(bodyOf(r.text)).toBe('$function$ SELECT count(*) FROM rental_m rental $function$');

    const shadow = fn(` SELECT count(*) FROM rental `, ` RETURNS bigint\n LANGUAGE sql\n SET search_path TO 'legacy', 'public'\n`);
    const existing = new Set([nameKey(q('legacy', 'rental'))]);
    expect(bodyOf(rewriteFunction(shadow, pagila, existing).text)).toBe('$function$ SELECT count(*) FROM rental $function$');
    // Without the shadowing table, the legacy schema is passed and public's rental is found; legacy is not mapped: qualified.
    expect(bodyOf(rewriteFunction(shadow, pagila).text)).toBe('$function$ SELECT count(*) FROM rental_m rental $function$');

    // A function of another schema without a search_path: its bare names are its own schema's, not public's.
    const other = fn(` SELECT count(*) FROM rental `, ' RETURNS bigint\n LANGUAGE sql\n').replace('public.f', 'reports.f');
    const ro = rewriteFunction(other, pagila);
    expect(bodyOf(ro.text)).toBe(bodyOf(other));
    expect(ro.notFollowed).toEqual(['public.rental']);
  });

  it('changes nothing when the mapping renames nothing', () => {
    const none: ObjectRenames = { relations: map(tables.map((n) => [q('public', n), q('public', n)])), functions: new Map(), types: new Map(), schemaMapping: {} };
    const def = fn(` SELECT count(*) FROM rental, public.inventory WHERE rental.x = inventory.y `, ' RETURNS bigint\n LANGUAGE sql\n');
    expect(rewriteFunction(def, none)).toEqual({ text: def, rewritten: [], notFollowed: [], dynamic: [] });
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

  it('says what a string body now names, and what it still names that was not followed', () => {
    const cat = base();
    cat.functions.push({
      oid: 21,
      schema: 'shop',
      name: 'purge',
      kind: 'f',
      signature: 'shop.purge()',
      definition:
        'CREATE OR REPLACE FUNCTION shop.purge()\n RETURNS void\n LANGUAGE plpgsql\n' +
        "AS $function$ BEGIN DELETE FROM orders WHERE orders.id < 0; EXECUTE 'TRUNCATE customers'; ANALYZE shop.notes; END $function$\n",
    });
    // shop.notes is not migrated, and a relation of the schema on the source: it is not a renamed one.
    cat.pathRelations = [q('shop', 'customers'), q('shop', 'orders'), q('shop', 'notes')];
    const plan = planSchemaObjects(cat, { schemaMapping: { shop: 'store' }, tableSuffix: '_v2' });
    const purge = plan.find((o) => o.key === 'f:21')!;
    expect(purge.statements[1]).toContain(`DELETE FROM "store"."orders_v2" orders WHERE orders.id < 0; EXECUTE 'TRUNCATE customers'; ANALYZE shop.notes;`);
    expect(purge.rewritten).toBe('function shop.purge(): its body now names shop.orders -> store.orders_v2');
    expect(purge.notices).toEqual([
      'function shop.purge(): it builds SQL at run time (EXECUTE) naming shop.customers, which the mapping renames; SQL built at run time is not rewritten: change it on the target',
    ]);
    expect(plan.find((o) => o.key === 'f:20')!.rewritten).toBeUndefined();
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
