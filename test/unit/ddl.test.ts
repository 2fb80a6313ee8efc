import { describe, it, expect } from 'vitest';
import {
  addConstraintDdl,
  addForeignKeyDdl,
  buildTableDef,
  columnDefinition,
  createIndexDdl,
  createSequenceDdl,
  createTableDdl,
  ensureExtensionDdl,
  keyConstraintSteps,
  mapColumn,
  quoteIdentLikePg,
  rewriteIndexDefinition,
  partitionDdl,
  rewriteExprTypes,
  rewriteSequenceReferences,
  rewriteTypeText,
  type SourceForeignKey,
  type SourcePartition,
  type SourceSequence,
  type SourceTable,
} from '../../activities/ddl';
import { planPostLoad, selectPostLoad, type PostLoadJob } from '../../activities/post-load';
import { mapSequenceName, mapTableName, mapTypeName, nameKey, targetObjectName } from '../../activities/naming';
import { createTypeDdl, createTypesDdl, extensionStatement, typeCreationStatements, typeRenames, type SourceType } from '../../activities/types-ddl';

const spec = { schemaMapping: { public: 'app', 'Sales Dept': 'Ventes' }, tableSuffix: '_migrated' };
const noMapping = { schemaMapping: {}, tableSuffix: '' };

const bigintSeq = (schema: string, name: string, extra: Partial<SourceSequence> = {}): SourceSequence => ({
  name: { schema, name },
  type: 'bigint',
  start: '1',
  increment: '1',
  min: '1',
  max: '9223372036854775807',
  cache: '1',
  cycle: false,
  identity: false,
  ...extra,
});

function table(extra: Partial<SourceTable> & Pick<SourceTable, 'source'>): SourceTable {
  return { columns: [], replicaIdentity: 'default', indexes: [], constraints: [], foreignKeys: [], sequences: [], estimatedRows: 0, ...extra };
}

describe('quoteIdentLikePg (what quote_ident prints)', () => {
  it('leaves plain lower-case names bare', () => {
    expect(quoteIdentLikePg('users')).toBe('users');
    expect(quoteIdentLikePg('_x1')).toBe('_x1');
    expect(quoteIdentLikePg('order_items2')).toBe('order_items2');
  });
  it('leaves unreserved keywords bare', () => {
    expect(quoteIdentLikePg('name')).toBe('name');
    expect(quoteIdentLikePg('data')).toBe('data');
    expect(quoteIdentLikePg('index')).toBe('index');
  });
  it('quotes upper case, spaces, leading digits, quotes and non-ASCII', () => {
    expect(quoteIdentLikePg('Users')).toBe('"Users"');
    expect(quoteIdentLikePg('Order Items')).toBe('"Order Items"');
    expect(quoteIdentLikePg('1abc')).toBe('"1abc"');
    expect(quoteIdentLikePg('say "hi"')).toBe('"say ""hi"""');
    expect(quoteIdentLikePg('café')).toBe('"café"');
    expect(quoteIdentLikePg('a-b')).toBe('"a-b"');
    expect(quoteIdentLikePg('')).toBe('""');
  });
  it('quotes reserved, column-name and type-function-name keywords', () => {
    expect(quoteIdentLikePg('user')).toBe('"user"');
    expect(quoteIdentLikePg('select')).toBe('"select"');
    expect(quoteIdentLikePg('integer')).toBe('"integer"'); // col_name keyword
    expect(quoteIdentLikePg('left')).toBe('"left"'); // type_func_name keyword
  });
});

describe('names on the target', () => {
  it('appends the suffix to objects and maps sequence schemas', () => {
    expect(targetObjectName('users_pkey', spec)).toBe('users_pkey_migrated');
    expect(mapSequenceName({ schema: 'public', name: 'users_id_seq' }, spec)).toEqual({ schema: 'app', name: 'users_id_seq_migrated' });
    expect(mapSequenceName({ schema: 'other', name: 'Seq' }, spec)).toEqual({ schema: 'other', name: 'Seq_migrated' });
  });
  it('shortens the name, not the suffix, beyond 63 bytes, without splitting a character', () => {
    const long = 'a'.repeat(60);
    expect(targetObjectName(long, spec)).toBe('a'.repeat(54) + '_migrated');
    const accented = 'é'.repeat(30); // 60 bytes
    const t = targetObjectName(accented, spec);
    expect(t).toBe('é'.repeat(27) + '_migrated');
    expect(Buffer.byteLength(t)).toBeLessThanOrEqual(63);
    expect(targetObjectName(long, noMapping)).toBe(long);
  });
});

describe('rewriteSequenceReferences', () => {
  const users = { source: { schema: 'public', name: 'users_id_seq' }, target: { schema: 'app', name: 'users_id_seq_migrated' } };
  it('renames a plain nextval reference', () => {
    expect(rewriteSequenceReferences(`nextval('public.users_id_seq'::regclass)`, [users])).toBe(`nextval('"app"."users_id_seq_migrated"'::regclass)`);
  });
  it('renames quoted mixed-case references', () => {
    const r = { source: { schema: 'Sales Dept', name: 'Order Items_id_seq' }, target: { schema: 'Ventes', name: 'Order Items_id_seq_migrated' } };
    expect(rewriteSequenceReferences(`nextval('"Sales Dept"."Order Items_id_seq"'::regclass)`, [r])).toBe(
      `nextval('"Ventes"."Order Items_id_seq_migrated"'::regclass)`,
    );
  });
  it('handles single quotes inside the name', () => {
    const r = { source: { schema: 'public', name: "it's" }, target: { schema: 'app', name: "it's_migrated" } };
    expect(rewriteSequenceReferences(`nextval('public."it''s"'::regclass)`, [r])).toBe(`nextval('"app"."it''s_migrated"'::regclass)`);
  });
  it('accepts an always-quoted spelling (keywords added by newer servers)', () => {
    expect(rewriteSequenceReferences(`nextval('"public"."users_id_seq"'::regclass)`, [users])).toBe(`nextval('"app"."users_id_seq_migrated"'::regclass)`);
  });
  it('renames every reference, once, and leaves other text alone', () => {
    const expr = `(nextval('public.users_id_seq'::regclass) * 10 + currval('public.users_id_seq'::regclass) + length('public.users_id_seq'))`;
    expect(rewriteSequenceReferences(expr, [users])).toBe(
      `(nextval('"app"."users_id_seq_migrated"'::regclass) * 10 + currval('"app"."users_id_seq_migrated"'::regclass) + length('public.users_id_seq'))`,
    );
  });
  it('does not rename a replacement again', () => {
    // a's target is spelled like b's source: one pass keeps a -> a_x.
    const a = { source: { schema: 's', name: 'a' }, target: { schema: 's', name: 'b' } };
    const b = { source: { schema: 's', name: 'b' }, target: { schema: 's', name: 'c' } };
    expect(rewriteSequenceReferences(`nextval('s.a'::regclass) + nextval('s.b'::regclass)`, [a, b])).toBe(
      `nextval('"s"."b"'::regclass) + nextval('"s"."c"'::regclass)`,
    );
  });
  it('refuses a default whose sequence reference it cannot find', () => {
    expect(() => rewriteSequenceReferences(`nextval('public.other_seq'::regclass)`, [users])).toThrow(/public\.users_id_seq/);
  });
});

describe('rewriteIndexDefinition', () => {
  const pair = { source: { schema: 'public', name: 'users' }, target: { schema: 'app', name: 'users_migrated' } };
  it('renames index and table of a plain index', () => {
    expect(
      rewriteIndexDefinition('CREATE INDEX users_email_idx ON public.users USING btree (email)', { source: 'users_email_idx', target: 'users_email_idx_migrated' }, pair),
    ).toBe('CREATE INDEX "users_email_idx_migrated" ON "app"."users_migrated" USING btree (email)');
  });
  it('keeps UNIQUE, INCLUDE and WHERE', () => {
    expect(
      createIndexDdl(
        { name: 'u_email', definition: 'CREATE UNIQUE INDEX u_email ON public.users USING btree (lower(email)) INCLUDE (id) WHERE (active AND (id > 10))' },
        pair,
        spec,
      ),
    ).toBe('CREATE UNIQUE INDEX "u_email_migrated" ON "app"."users_migrated" USING btree (lower(email)) INCLUDE (id) WHERE (active AND (id > 10))');
  });
  it('handles quoted mixed-case, space and keyword names', () => {
    const p = { source: { schema: 'Sales Dept', name: 'Order Items' }, target: { schema: 'Ventes', name: 'Order Items_migrated' } };
    expect(createIndexDdl({ name: 'Big Orders', definition: 'CREATE INDEX "Big Orders" ON "Sales Dept"."Order Items" USING btree (price) WHERE (price > (100)::numeric)' }, p, spec)).toBe(
      'CREATE INDEX "Big Orders_migrated" ON "Ventes"."Order Items_migrated" USING btree (price) WHERE (price > (100)::numeric)',
    );
    const k = { source: { schema: 'public', name: 'user' }, target: { schema: 'public', name: 'user_x' } };
    expect(createIndexDdl({ name: 'select', definition: 'CREATE INDEX "select" ON public."user" USING hash ("from")' }, k, { schemaMapping: {}, tableSuffix: '_x' })).toBe(
      'CREATE INDEX "select_x" ON "public"."user_x" USING hash ("from")',
    );
  });
  it('keeps ON ONLY', () => {
    expect(rewriteIndexDefinition('CREATE INDEX i ON ONLY public.users USING btree (a)', { source: 'i', target: 'i2' }, pair)).toBe(
      'CREATE INDEX "i2" ON ONLY "app"."users_migrated" USING btree (a)',
    );
  });
  it('refuses a definition for another table', () => {
    expect(() => rewriteIndexDefinition('CREATE INDEX i ON public.other USING btree (a)', { source: 'i', target: 'i2' }, pair)).toThrow(/cannot rewrite index i/);
  });
});

describe('columns', () => {
  it('prints type, collation, default and NOT NULL in order', () => {
    const col = mapColumn(
      { name: 'E-mail', type: 'character varying(200)', notNull: true, default: `''::character varying`, collation: { schema: 'pg_catalog', name: 'C' } },
      spec,
    );
    expect(columnDefinition(col)).toBe(`"E-mail" character varying(200) COLLATE "pg_catalog"."C" DEFAULT ''::character varying NOT NULL`);
  });
  it('renames the serial sequence in the default', () => {
    const col = mapColumn(
      { name: 'id', type: 'integer', notNull: true, default: `nextval('public.users_id_seq'::regclass)`, defaultSequences: [{ schema: 'public', name: 'users_id_seq' }] },
      spec,
    );
    expect(col.default).toBe(`nextval('"app"."users_id_seq_migrated"'::regclass)`);
    expect(columnDefinition(col)).toBe(`"id" integer DEFAULT nextval('"app"."users_id_seq_migrated"'::regclass) NOT NULL`);
  });
  it('prints generated columns', () => {
    expect(columnDefinition(mapColumn({ name: 'Total', type: 'numeric', notNull: false, generated: '((qty)::numeric * price)' }, spec))).toBe(
      '"Total" numeric GENERATED ALWAYS AS (((qty)::numeric * price)) STORED',
    );
  });
  it('prints identity columns with their sequence', () => {
    const col = mapColumn({ name: 'id', type: 'bigint', notNull: true, identity: 'always' }, spec);
    expect(columnDefinition(col, { target: { schema: 'app', name: 't_id_seq_migrated' }, options: 'START WITH 5 INCREMENT BY 2' })).toBe(
      '"id" bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME "app"."t_id_seq_migrated" START WITH 5 INCREMENT BY 2) NOT NULL',
    );
    expect(columnDefinition(mapColumn({ name: 'n', type: 'integer', notNull: true, identity: 'by-default' }, spec))).toBe(
      '"n" integer GENERATED BY DEFAULT AS IDENTITY NOT NULL',
    );
  });
});

describe('sequences', () => {
  it('creates a sequence with every parameter under the mapped name', () => {
    expect(createSequenceDdl(bigintSeq('public', 'Shared Seq', { type: 'integer', start: '100', increment: '-2', min: '-50', max: '1000', cache: '10', cycle: true }), spec)).toBe(
      'CREATE SEQUENCE IF NOT EXISTS "app"."Shared Seq_migrated" AS integer START WITH 100 INCREMENT BY -2 MINVALUE -50 MAXVALUE 1000 CACHE 10 CYCLE',
    );
  });
  it('refuses parameters that are not integers', () => {
    expect(() => createSequenceDdl(bigintSeq('public', 's', { start: '1; DROP TABLE x' }), spec)).toThrow(/not an integer/);
  });
});

describe('constraints and foreign keys', () => {
  const target = { schema: 'app', name: 'orders_migrated' };
  it('adds unique/check/exclusion constraints with the suffixed name', () => {
    expect(addConstraintDdl({ name: 'orders_qty_check', kind: 'check', definition: 'CHECK ((qty > 0))' }, target, spec)).toBe(
      'ALTER TABLE "app"."orders_migrated" ADD CONSTRAINT "orders_qty_check_migrated" CHECK ((qty > 0))',
    );
    expect(addConstraintDdl({ name: 'Unique "Item"', kind: 'unique', definition: 'UNIQUE (item_no)' }, target, spec)).toBe(
      'ALTER TABLE "app"."orders_migrated" ADD CONSTRAINT "Unique ""Item""_migrated" UNIQUE (item_no)',
    );
  });
  const fk: SourceForeignKey = {
    name: 'orders_customer_fk',
    columns: ['Customer ID', 'region'],
    referencedTable: { schema: 'public', name: 'Customers' },
    referencedColumns: ['id', 'region'],
    onUpdate: 'a',
    onDelete: 'c',
    match: 's',
    deferrable: false,
    deferred: false,
    validated: true,
  };
  it('builds a foreign key to the mapped table', () => {
    expect(addForeignKeyDdl(fk, target, mapTableName(fk.referencedTable, spec), spec)).toBe(
      'ALTER TABLE "app"."orders_migrated" ADD CONSTRAINT "orders_customer_fk_migrated" FOREIGN KEY ("Customer ID", "region") ' +
        'REFERENCES "app"."Customers_migrated" ("id", "region") ON UPDATE NO ACTION ON DELETE CASCADE',
    );
  });
  it('prints MATCH FULL, SET NULL (cols), DEFERRABLE INITIALLY DEFERRED and NOT VALID', () => {
    const f: SourceForeignKey = { ...fk, match: 'f', onUpdate: 'r', onDelete: 'n', deleteSetColumns: ['Customer ID'], deferrable: true, deferred: true, validated: false };
    expect(addForeignKeyDdl(f, target, { schema: 'x', name: 'y' }, spec)).toBe(
      'ALTER TABLE "app"."orders_migrated" ADD CONSTRAINT "orders_customer_fk_migrated" FOREIGN KEY ("Customer ID", "region") ' +
        'REFERENCES "x"."y" ("id", "region") MATCH FULL ON UPDATE RESTRICT ON DELETE SET NULL ("Customer ID") DEFERRABLE INITIALLY DEFERRED NOT VALID',
    );
    expect(addForeignKeyDdl({ ...fk, onDelete: 'd', deferrable: true }, target, { schema: 'x', name: 'y' }, spec)).toMatch(/ON DELETE SET DEFAULT DEFERRABLE$/);
  });
});

describe('buildTableDef', () => {
  const orderItems = table({
    source: { schema: 'Sales Dept', name: 'Order Items' },
    columns: [
      { name: 'Order ID', type: 'bigint', notNull: true },
      { name: 'line', type: 'integer', notNull: true, default: `nextval('"Sales Dept"."Order Items_line_seq"'::regclass)`, defaultSequences: [{ schema: 'Sales Dept', name: 'Order Items_line_seq' }] },
      { name: 'item_no', type: 'bigint', notNull: true, identity: 'always' },
      { name: 'ticket', type: 'integer', notNull: false, default: `nextval('public.tickets'::regclass)`, defaultSequences: [{ schema: 'public', name: 'tickets' }] },
      { name: 'customer', type: 'integer', notNull: false },
      { name: 'qty', type: 'integer', notNull: true, default: '1' },
      { name: 'price', type: 'numeric(12,2)', notNull: true },
      { name: 'total', type: 'numeric', notNull: false, generated: '((qty)::numeric * price)' },
      { name: 'Note', type: 'text', notNull: false, collation: { schema: 'pg_catalog', name: 'C' } },
      { name: 'status', type: '"Sales Dept"."Status"', notNull: false, default: `'new'::"Sales Dept"."Status"` },
    ],
    primaryKey: {
      name: 'Order Items_pkey',
      columns: ['Order ID', 'line'],
      definition: 'PRIMARY KEY ("Order ID", line)',
      index: {
        name: 'Order Items_pkey',
        definition: `CREATE UNIQUE INDEX "Order Items_pkey" ON "Sales Dept"."Order Items" USING btree ("Order ID", line) WITH (fillfactor='80')`,
        deferrable: false,
        deferred: false,
      },
    },
    replicaIdentity: 'index',
    replicaIdentityIndex: { name: 'Unique Item', columns: ['item_no'] },
    indexes: [
      { name: 'Big Orders', definition: 'CREATE INDEX "Big Orders" ON "Sales Dept"."Order Items" USING btree (price) WHERE (price > (100)::numeric)' },
      { name: 'oi_lower_note', definition: 'CREATE INDEX oi_lower_note ON "Sales Dept"."Order Items" USING btree (lower("Note"))' },
    ],
    constraints: [
      { name: 'Order Items_qty_check', kind: 'check', definition: 'CHECK ((qty > 0))' },
      {
        name: 'Unique Item',
        kind: 'unique',
        definition: 'UNIQUE NULLS NOT DISTINCT (item_no) INCLUDE (qty) DEFERRABLE INITIALLY DEFERRED',
        index: {
          name: 'Unique Item',
          definition: 'CREATE UNIQUE INDEX "Unique Item" ON "Sales Dept"."Order Items" USING btree (item_no) INCLUDE (qty) NULLS NOT DISTINCT',
          deferrable: true,
          deferred: true,
        },
      },
      { name: 'oi_no_overlap', kind: 'exclusion', definition: 'EXCLUDE USING gist (customer WITH =, price WITH <>)' },
    ],
    foreignKeys: [
      {
        name: 'fk_customer',
        columns: ['customer'],
        referencedTable: { schema: 'Sales Dept', name: 'Customers' },
        referencedColumns: ['id'],
        onUpdate: 'a',
        onDelete: 'c',
        match: 's',
        deferrable: false,
        deferred: false,
        validated: true,
      },
      {
        name: 'fk_product',
        columns: ['qty'],
        referencedTable: { schema: 'catalog', name: 'products' },
        referencedColumns: ['id'],
        onUpdate: 'a',
        onDelete: 'a',
        match: 's',
        deferrable: false,
        deferred: false,
        validated: true,
      },
    ],
    sequences: [
      bigintSeq('Sales Dept', 'Order Items_line_seq', { type: 'integer', max: '2147483647', ownedByColumn: 'line' }),
      bigintSeq('Sales Dept', 'Order Items_item_no_seq', { start: '100', increment: '5', ownedByColumn: 'item_no', identity: true }),
      bigintSeq('public', 'tickets', { cache: '20' }),
    ],
    estimatedRows: 42,
  });
  const migrated = [
    { source: orderItems.source, target: mapTableName(orderItems.source, spec) },
    { source: { schema: 'Sales Dept', name: 'Customers' }, target: mapTableName({ schema: 'Sales Dept', name: 'Customers' }, spec) },
  ];
  const def = buildTableDef(orderItems, migrated[0]!.target, spec, migrated);

  it('maps the table name', () => {
    expect(def.target).toEqual({ schema: 'Ventes', name: 'Order Items_migrated' });
  });

  it('creates schemas, shared and serial sequences, the table without its PK, then owns the serial sequence', () => {
    expect(def.preLoad).toEqual([
      'CREATE SCHEMA IF NOT EXISTS "Ventes"',
      'CREATE SCHEMA IF NOT EXISTS "app"',
      'CREATE SEQUENCE IF NOT EXISTS "Ventes"."Order Items_line_seq_migrated" AS integer START WITH 1 INCREMENT BY 1 MINVALUE 1 MAXVALUE 2147483647 CACHE 1 NO CYCLE',
      'CREATE SEQUENCE IF NOT EXISTS "app"."tickets_migrated" AS bigint START WITH 1 INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 20 NO CYCLE',
      [
        'CREATE TABLE "Ventes"."Order Items_migrated" (',
        '  "Order ID" bigint NOT NULL,',
        `  "line" integer DEFAULT nextval('"Ventes"."Order Items_line_seq_migrated"'::regclass) NOT NULL,`,
        '  "item_no" bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME "Ventes"."Order Items_item_no_seq_migrated" START WITH 100 INCREMENT BY 5 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 NO CYCLE) NOT NULL,',
        `  "ticket" integer DEFAULT nextval('"app"."tickets_migrated"'::regclass),`,
        '  "customer" integer,',
        '  "qty" integer DEFAULT 1 NOT NULL,',
        '  "price" numeric(12,2) NOT NULL,',
        '  "total" numeric GENERATED ALWAYS AS (((qty)::numeric * price)) STORED,',
        '  "Note" text COLLATE "pg_catalog"."C",',
        `  "status" "Sales Dept"."Status" DEFAULT 'new'::"Sales Dept"."Status"`,
        ')',
      ].join('\n'),
      'ALTER SEQUENCE "Ventes"."Order Items_line_seq_migrated" OWNED BY "Ventes"."Order Items_migrated"."line"',
    ]);
  });

  it('builds key indexes with the other indexes, attaches them, adds constraints, the replica identity, then foreign keys after the load', () => {
    expect(def.postLoad).toEqual([
      `CREATE UNIQUE INDEX "Order Items_pkey_migrated" ON "Ventes"."Order Items_migrated" USING btree ("Order ID", line) WITH (fillfactor='80')`,
      'CREATE UNIQUE INDEX "Unique Item_migrated" ON "Ventes"."Order Items_migrated" USING btree (item_no) INCLUDE (qty) NULLS NOT DISTINCT',
      'CREATE INDEX "Big Orders_migrated" ON "Ventes"."Order Items_migrated" USING btree (price) WHERE (price > (100)::numeric)',
      'CREATE INDEX "oi_lower_note_migrated" ON "Ventes"."Order Items_migrated" USING btree (lower("Note"))',
      'ALTER TABLE "Ventes"."Order Items_migrated" ADD CONSTRAINT "Order Items_pkey_migrated" PRIMARY KEY USING INDEX "Order Items_pkey_migrated"',
      'ALTER TABLE "Ventes"."Order Items_migrated" ADD CONSTRAINT "Order Items_qty_check_migrated" CHECK ((qty > 0))',
      'ALTER TABLE "Ventes"."Order Items_migrated" ADD CONSTRAINT "Unique Item_migrated" UNIQUE USING INDEX "Unique Item_migrated" DEFERRABLE INITIALLY DEFERRED',
      'ALTER TABLE "Ventes"."Order Items_migrated" ADD CONSTRAINT "oi_no_overlap_migrated" EXCLUDE USING gist (customer WITH =, price WITH <>)',
      'ALTER TABLE "Ventes"."Order Items_migrated" REPLICA IDENTITY USING INDEX "Unique Item_migrated"',
      'ALTER TABLE "Ventes"."Order Items_migrated" ADD CONSTRAINT "fk_customer_migrated" FOREIGN KEY ("customer") REFERENCES "Ventes"."Customers_migrated" ("id") ON UPDATE NO ACTION ON DELETE CASCADE',
      'ALTER TABLE "Ventes"."Order Items_migrated" ADD CONSTRAINT "fk_product_migrated" FOREIGN KEY ("qty") REFERENCES "catalog"."products" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION',
    ]);
    expect(def.foreignKeys).toEqual(def.postLoad.slice(-2));
  });

  it('describes each post-load step for the parallel runner', () => {
    expect(def.postLoadSteps).toHaveLength(def.postLoad.length);
    expect(def.postLoadSteps!.map((st) => st.kind)).toEqual([
      'index',
      'index',
      'index',
      'index',
      'constraint',
      'constraint',
      'constraint',
      'constraint',
      'constraint',
      'foreign-key',
      'foreign-key',
    ]);
    expect(def.postLoad.filter((_, i) => def.postLoadSteps![i]!.usingIndex)).toEqual([def.postLoad[4], def.postLoad[6]]);
    expect(def.postLoadSteps!.slice(-2).map((st) => st.references)).toEqual([
      { schema: 'Ventes', name: 'Customers_migrated' },
      { schema: 'catalog', name: 'products' },
    ]);
    // Validated on the source: may be added NOT VALID and validated after (keys after the cutover).
    expect(def.postLoadSteps!.slice(-2).map((st) => st.validate)).toEqual([
      'ALTER TABLE "Ventes"."Order Items_migrated" VALIDATE CONSTRAINT "fk_customer_migrated"',
      'ALTER TABLE "Ventes"."Order Items_migrated" VALIDATE CONSTRAINT "fk_product_migrated"',
    ]);
    expect(def.postLoadSteps!.filter((st) => st.kind !== 'foreign-key').every((st) => st.validate === undefined)).toBe(true);
  });

  it('adds a key in one statement when the index is unknown or cannot be attached', () => {
    const pair = { source: { schema: 'public', name: 't' }, target: { schema: 'app', name: 't_migrated' } };
    const pk = { name: 't_pkey', columns: ['a'], definition: 'PRIMARY KEY (a)' };
    expect(keyConstraintSteps(pk, 'primary-key', pair, spec)).toEqual([{ kind: 'constraint', sql: 'ALTER TABLE "app"."t_migrated" ADD CONSTRAINT "t_pkey_migrated" PRIMARY KEY (a)' }]);
    const odd = { ...pk, index: { name: 't_pkey', definition: 'CREATE UNIQUE INDEX t_pkey ON public.t USING hash (a)', deferrable: false, deferred: false } };
    expect(keyConstraintSteps(odd, 'primary-key', pair, spec)).toHaveLength(1);
    const uq = {
      name: 't_a_key',
      kind: 'unique' as const,
      definition: 'UNIQUE (a) DEFERRABLE',
      index: { name: 't_a_key', definition: 'CREATE UNIQUE INDEX t_a_key ON public.t USING btree (a)', deferrable: true, deferred: false },
    };
    expect(keyConstraintSteps(uq, 'unique', pair, spec)).toEqual([
      { kind: 'index', sql: 'CREATE UNIQUE INDEX "t_a_key_migrated" ON "app"."t_migrated" USING btree (a)' },
      { kind: 'constraint', sql: 'ALTER TABLE "app"."t_migrated" ADD CONSTRAINT "t_a_key_migrated" UNIQUE USING INDEX "t_a_key_migrated" DEFERRABLE', usingIndex: true },
    ]);
  });

  it('warns about a foreign key to a table that is not migrated', () => {
    expect(def.warnings).toHaveLength(1);
    expect(def.warnings![0]).toContain('fk_product');
    expect(def.warnings![0]).toContain('catalog.products, which is not migrated');
  });

  it('describes columns, keys and sequences', () => {
    expect(def.copyColumns).toEqual(['Order ID', 'line', 'item_no', 'ticket', 'customer', 'qty', 'price', 'Note', 'status']);
    expect(def.keyColumns).toEqual(['Order ID', 'line']);
    expect(def.replicaIdentity).toBe('index');
    expect(def.estimatedRows).toBe(42);
    expect(def.columns.find((c) => c.name === 'Note')!.collation).toBe('"pg_catalog"."C"');
    expect(def.columns.find((c) => c.name === 'item_no')!.identity).toBe('always');
    expect(def.sequences).toEqual([
      { source: { schema: 'Sales Dept', name: 'Order Items_line_seq' }, target: { schema: 'Ventes', name: 'Order Items_line_seq_migrated' }, identity: false, ownedByColumn: 'line' },
      { source: { schema: 'Sales Dept', name: 'Order Items_item_no_seq' }, target: { schema: 'Ventes', name: 'Order Items_item_no_seq_migrated' }, identity: true, ownedByColumn: 'item_no' },
      { source: { schema: 'public', name: 'tickets' }, target: { schema: 'app', name: 'tickets_migrated' }, identity: false },
    ]);
  });

  it('sets REPLICA IDENTITY FULL before the load and takes key columns from a replica identity index without PK', () => {
    const t = table({ source: { schema: 'public', name: 'log' }, columns: [{ name: 'msg', type: 'text', notNull: false }], replicaIdentity: 'full' });
    const d = buildTableDef(t, mapTableName(t.source, spec), spec, []);
    expect(d.preLoad).toEqual([
      'CREATE SCHEMA IF NOT EXISTS "app"',
      'CREATE TABLE "app"."log_migrated" (\n  "msg" text\n)',
      'ALTER TABLE "app"."log_migrated" REPLICA IDENTITY FULL',
    ]);
    expect(d.postLoad).toEqual([]);
    expect(d.keyColumns).toEqual([]);
    expect(d.foreignKeys).toBeUndefined();
    expect(d.warnings).toBeUndefined();

    const u = table({
      source: { schema: 'public', name: 'kv' },
      columns: [{ name: 'k', type: 'text', notNull: true }],
      replicaIdentity: 'index',
      replicaIdentityIndex: { name: 'kv_k', columns: ['k'] },
      indexes: [{ name: 'kv_k', definition: 'CREATE UNIQUE INDEX kv_k ON public.kv USING btree (k)' }],
    });
    const e = buildTableDef(u, { schema: 'public', name: 'kv' }, noMapping, []);
    expect(e.keyColumns).toEqual(['k']);
    expect(e.postLoad).toEqual(['CREATE UNIQUE INDEX "kv_k" ON "public"."kv" USING btree (k)', 'ALTER TABLE "public"."kv" REPLICA IDENTITY USING INDEX "kv_k"']);
  });

  it('refuses a target table name longer than 63 bytes', () => {
    const t = table({ source: { schema: 'public', name: 'x'.repeat(60) } });
    expect(() => buildTableDef(t, mapTableName(t.source, spec), spec, [])).toThrow(/longer than 63 bytes/);
  });

  it('creates a table without primary key', () => {
    const t = table({ source: { schema: 'public', name: 'Ünïcode "tbl"' }, columns: [{ name: 'ß', type: 'integer', notNull: false }] });
    expect(createTableDdl(t, mapTableName(t.source, spec), spec)).toBe('CREATE TABLE "app"."Ünïcode ""tbl""_migrated" (\n  "ß" integer\n)');
  });
});

describe('type names in printed text', () => {
  const renames = [
    { source: { schema: 'public', name: 'mood' }, target: { schema: 'app', name: 'mood' } },
    { source: { schema: 'Odd Types', name: 'Pair' }, target: { schema: 'Weird', name: 'Pair' } },
    { source: { schema: 'public', name: 'same' }, target: { schema: 'public', name: 'same' } },
  ];
  it('rewrites a column type, keeping array brackets, leaving built-in and unmapped types alone', () => {
    expect(rewriteTypeText('public.mood', renames)).toBe('"app"."mood"');
    expect(rewriteTypeText('public.mood[]', renames)).toBe('"app"."mood"[]');
    expect(rewriteTypeText('"Odd Types"."Pair"', renames)).toBe('"Weird"."Pair"');
    expect(rewriteTypeText('public.mood2', renames)).toBe('public.mood2');
    expect(rewriteTypeText('character varying(20)[]', renames)).toBe('character varying(20)[]');
    expect(rewriteTypeText('public.same', renames)).toBe('public.same');
  });
  it('rewrites casts in expressions, not longer names or other text', () => {
    expect(rewriteExprTypes(`'ok'::public.mood`, renames)).toBe(`'ok'::"app"."mood"`);
    expect(rewriteExprTypes(`(m <> 'sad'::public.mood) AND (x = '{}'::public.mood[])`, renames)).toBe(`(m <> 'sad'::"app"."mood") AND (x = '{}'::"app"."mood"[])`);
    expect(rewriteExprTypes(`ROW(1, 2)::"Odd Types"."Pair"`, renames)).toBe(`ROW(1, 2)::"Weird"."Pair"`);
    expect(rewriteExprTypes(`'a'::public.mood2`, renames)).toBe(`'a'::public.mood2`);
    expect(rewriteExprTypes(`public.mood('x')`, renames)).toBe(`public.mood('x')`);
    expect(rewriteExprTypes(`'x'::text`, [])).toBe(`'x'::text`);
  });
  it('maps columns, defaults, generated expressions and checks through the renames', () => {
    const col = mapColumn({ name: 'm', type: 'public.mood[]', notNull: false, default: `'{ok}'::public.mood[]` }, spec, renames);
    expect(col).toEqual({ name: 'm', type: '"app"."mood"[]', notNull: false, default: `'{ok}'::"app"."mood"[]` });
    expect(addConstraintDdl({ name: 'c', kind: 'check', definition: `CHECK ((m <> 'sad'::public.mood))` }, { schema: 'app', name: 't' }, spec, renames)).toBe(
      `ALTER TABLE "app"."t" ADD CONSTRAINT "c_migrated" CHECK ((m <> 'sad'::"app"."mood"))`,
    );
  });
});

describe('user-defined types', () => {
  const types: SourceType[] = [
    { kind: 'enum', name: { schema: 'public', name: 'mood' }, labels: ['sad', "it's", 'ha$pgdts$ppy'] },
    {
      kind: 'domain',
      name: { schema: 'public', name: 'posint' },
      baseType: 'integer',
      default: '1',
      notNull: true,
      checks: [{ name: 'posint_check', definition: 'CHECK ((VALUE > 0))' }],
    },
    {
      kind: 'composite',
      name: { schema: 'public', name: 'pair' },
      attributes: [
        { name: 'm', type: 'public.mood' },
        { name: 'Label', type: 'text', collation: { schema: 'pg_catalog', name: 'C' } },
      ],
    },
    {
      kind: 'range',
      name: { schema: 'public', name: 'floatrange' },
      subtype: 'double precision',
      subtypeDiff: { schema: 'pg_catalog', name: 'float8mi' },
      multirange: { schema: 'public', name: 'floatmultirange' },
    },
    { kind: 'extension', name: { schema: 'public', name: 'hstore' }, extension: 'hstore' },
    { kind: 'unsupported', name: { schema: 'public', name: 'blob' }, reason: 'it is a base type' },
  ];
  const renames = typeRenames(types, spec);

  it('maps type schemas without a suffix, multiranges too', () => {
    expect(mapTypeName({ schema: 'public', name: 'mood' }, spec)).toEqual({ schema: 'app', name: 'mood' });
    expect(renames.map((r) => `${r.source.name}->${r.target.schema}.${r.target.name}`)).toEqual([
      'mood->app.mood',
      'posint->app.posint',
      'pair->app.pair',
      'floatrange->app.floatrange',
      'floatmultirange->app.floatmultirange',
      'blob->app.blob',
    ]);
    expect(typeRenames(types, noMapping)).toEqual([]);
  });

  it('creates each kind under its mapped name', () => {
    const [e, d, c, r] = types as [
      Extract<SourceType, { kind: 'enum' }>,
      Extract<SourceType, { kind: 'domain' }>,
      Extract<SourceType, { kind: 'composite' }>,
      Extract<SourceType, { kind: 'range' }>,
    ];
    expect(typeCreationStatements(e, spec, renames)).toEqual([`CREATE TYPE "app"."mood" AS ENUM ('sad', 'it''s', 'ha$pgdts$ppy')`]);
    expect(typeCreationStatements(d, spec, renames)).toEqual([
      'CREATE DOMAIN "app"."posint" AS integer DEFAULT 1 NOT NULL',
      'ALTER DOMAIN "app"."posint" ADD CONSTRAINT "posint_check" CHECK ((VALUE > 0))',
    ]);
    expect(typeCreationStatements(c, spec, renames)).toEqual(['CREATE TYPE "app"."pair" AS ("m" "app"."mood", "Label" text COLLATE "pg_catalog"."C")']);
    expect(typeCreationStatements(r, spec, renames)).toEqual([
      'CREATE TYPE "app"."floatrange" AS RANGE (SUBTYPE = double precision, SUBTYPE_DIFF = "pg_catalog"."float8mi", MULTIRANGE_TYPE_NAME = "app"."floatmultirange")',
    ]);
  });

  it('guards each creation so an existing type is used as it is, with a dollar quote that does not clash', () => {
    const block = createTypeDdl(types[0]!, spec, renames)!;
    expect(block).toBe(
      [
        'DO $pgdts1$',
        'BEGIN',
        `  IF pg_catalog.to_regtype('"app"."mood"') IS NULL THEN`,
        `    EXECUTE 'CREATE TYPE "app"."mood" AS ENUM (''sad'', ''it''''s'', ''ha$pgdts$ppy'')';`,
        '  END IF;',
        'END',
        '$pgdts1$',
      ].join('\n'),
    );
    const refuse = createTypeDdl(types[5]!, spec, renames)!;
    expect(refuse).toContain(`IF pg_catalog.to_regtype('"app"."blob"') IS NULL THEN`);
    expect(refuse).toContain(`ERRCODE = 'feature_not_supported'`);
    expect(refuse).toContain('type public.blob cannot be migrated (it is a base type); create it on the target as app.blob before starting the migration');
    expect(createTypeDdl(types[4]!, spec, renames)).toBeUndefined();
  });

  it('installs an extension once, in its source schema, refusing clearly when the target lacks it or has it elsewhere', () => {
    const ext = extensionStatement('hstore', 'public', [{ schema: 'public', name: 'hstore' }]);
    expect(ext).toContain(`WHERE e.extname = 'hstore'`);
    expect(ext).toContain(`EXECUTE 'CREATE EXTENSION IF NOT EXISTS "hstore" WITH SCHEMA "public" CASCADE';`);
    expect(ext).toContain('extension hstore, which is not available on the target');
    expect(ext).toContain(`ELSIF installed <> 'public' THEN`);
    const all = createTypesDdl([...types, { kind: 'extension', name: { schema: 'public', name: 'ghstore' }, extension: 'hstore' }], spec, renames);
    expect(all.slice(0, 2)).toEqual(['CREATE SCHEMA IF NOT EXISTS "app"', 'CREATE SCHEMA IF NOT EXISTS "public"']);
    expect(all.filter((s) => s.includes('CREATE EXTENSION'))).toHaveLength(1);
    expect(all.find((s) => s.includes('CREATE EXTENSION'))).toContain('type(s) public.hstore, public.ghstore of extension hstore');
    expect(all).toHaveLength(2 + 6);
  });
});

describe('partitioned tables', () => {
  const cols = [
    { name: 'id', type: 'integer', notNull: true, default: `nextval('public.pay_id_seq'::regclass)`, defaultSequences: [{ schema: 'public', name: 'pay_id_seq' }] },
    { name: 'at', type: 'timestamp with time zone', notNull: true },
    { name: 'kind', type: 'public.mood', notNull: false },
  ];
  const part = (name: string, parent: string, bound: string, extra: Partial<SourcePartition> = {}): SourcePartition => ({
    name: { schema: 'public', name },
    parent: { schema: 'public', name: parent },
    bound,
    columns: cols,
    replicaIdentity: 'default',
    indexes: [],
    constraints: [],
    foreignKeys: [],
    ...extra,
  });
  const root = table({
    source: { schema: 'public', name: 'pay' },
    columns: cols,
    primaryKey: { name: 'pay_pkey', columns: ['at', 'id'], definition: 'PRIMARY KEY (at, id)' },
    partitionKey: 'RANGE (at)',
    indexes: [{ name: 'pay_kind', definition: 'CREATE INDEX pay_kind ON ONLY public.pay USING btree (kind)' }],
    sequences: [bigintSeq('public', 'pay_id_seq')],
    partitions: [
      part('pay_2024', 'pay', `FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00')`, { partitionKey: 'LIST (kind)' }),
      part('pay_old', 'pay', 'DEFAULT', {
        columns: [cols[0]!, { ...cols[1]! }, { name: 'kind', type: 'public.mood', notNull: true, default: `'sad'::public.mood` }],
        replicaIdentity: 'full',
        constraints: [{ name: 'old_check', kind: 'check', definition: 'CHECK ((id > 0))' }],
      }),
      part('pay_2024_a', 'pay_2024', `FOR VALUES IN ('sad', 'ok')`, {
        indexes: [{ name: 'pay_2024_a_local', definition: 'CREATE INDEX pay_2024_a_local ON public.pay_2024_a USING btree (id)' }],
        foreignKeys: [
          {
            name: 'a_fk',
            columns: ['id'],
            referencedTable: { schema: 'public', name: 'other' },
            referencedColumns: ['id'],
            onUpdate: 'a',
            onDelete: 'a',
            match: 's',
            deferrable: false,
            deferred: false,
            validated: true,
          },
        ],
      }),
    ],
  });
  const renames = [{ source: { schema: 'public', name: 'mood' }, target: { schema: 'app', name: 'mood' } }];
  const def = buildTableDef(root, mapTableName(root.source, spec), spec, [{ source: root.source, target: mapTableName(root.source, spec) }], renames);

  it('creates the root with PARTITION BY, then every partition under its mapped parent, with what differs from the parent', () => {
    expect(def.preLoad).toEqual([
      'CREATE SCHEMA IF NOT EXISTS "app"',
      'CREATE SEQUENCE IF NOT EXISTS "app"."pay_id_seq_migrated" AS bigint START WITH 1 INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 NO CYCLE',
      [
        'CREATE TABLE "app"."pay_migrated" (',
        `  "id" integer DEFAULT nextval('"app"."pay_id_seq_migrated"'::regclass) NOT NULL,`,
        '  "at" timestamp with time zone NOT NULL,',
        '  "kind" "app"."mood"',
        ') PARTITION BY RANGE (at)',
      ].join('\n'),
      `CREATE TABLE "app"."pay_2024_migrated" PARTITION OF "app"."pay_migrated" FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00') PARTITION BY LIST (kind)`,
      'CREATE TABLE "app"."pay_old_migrated" PARTITION OF "app"."pay_migrated" DEFAULT',
      `ALTER TABLE "app"."pay_old_migrated" ALTER COLUMN "kind" SET DEFAULT 'sad'::"app"."mood"`,
      'ALTER TABLE "app"."pay_old_migrated" ALTER COLUMN "kind" SET NOT NULL',
      'ALTER TABLE "app"."pay_old_migrated" REPLICA IDENTITY FULL',
      `CREATE TABLE "app"."pay_2024_a_migrated" PARTITION OF "app"."pay_2024_migrated" FOR VALUES IN ('sad', 'ok')`,
    ]);
  });

  it("adds the root's key first (it cascades), partitions' own indexes, the root index without ONLY (it cascades), then constraints and foreign keys", () => {
    expect(def.postLoad).toEqual([
      'ALTER TABLE "app"."pay_migrated" ADD CONSTRAINT "pay_pkey_migrated" PRIMARY KEY (at, id)',
      'CREATE INDEX "pay_2024_a_local_migrated" ON "app"."pay_2024_a_migrated" USING btree (id)',
      'CREATE INDEX "pay_kind_migrated" ON "app"."pay_migrated" USING btree (kind)',
      'ALTER TABLE "app"."pay_old_migrated" ADD CONSTRAINT "old_check_migrated" CHECK ((id > 0))',
      'ALTER TABLE "app"."pay_2024_a_migrated" ADD CONSTRAINT "a_fk_migrated" FOREIGN KEY ("id") REFERENCES "public"."other" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION',
    ]);
    expect(def.foreignKeys).toEqual(def.postLoad.slice(-1));
    expect(def.postLoadSteps!.map((st) => st.kind)).toEqual(['constraint', 'index', 'index', 'constraint', 'foreign-key']);
    // A leaf partition takes NOT VALID; a partitioned table does not before PostgreSQL 18.
    expect(def.postLoadSteps!.at(-1)!.validate).toBe('ALTER TABLE "app"."pay_2024_a_migrated" VALIDATE CONSTRAINT "a_fk_migrated"');
    expect(def.warnings).toEqual([expect.stringContaining('foreign key a_fk of public.pay_2024_a references public.other, which is not migrated')]);
  });

  it("adds a partitioned table's own foreign key validated at once (NOT VALID is refused there before PostgreSQL 18)", () => {
    const fk = root.partitions![2]!.foreignKeys[0]!;
    const withFk = { ...root, foreignKeys: [{ ...fk, name: 'root_fk' }] };
    const d = buildTableDef(withFk, mapTableName(root.source, spec), spec, [{ source: root.source, target: mapTableName(root.source, spec) }], renames);
    expect(d.postLoadSteps!.filter((st) => st.kind === 'foreign-key').map((st) => st.validate)).toEqual([
      undefined,
      'ALTER TABLE "app"."pay_2024_a_migrated" VALIDATE CONSTRAINT "a_fk_migrated"',
    ]);
  });

  it('describes the partitions and copies through the root', () => {
    expect(def.partitioned).toBe(true);
    expect(def.partitions).toEqual([
      { source: { schema: 'public', name: 'pay_2024' }, target: { schema: 'app', name: 'pay_2024_migrated' } },
      { source: { schema: 'public', name: 'pay_old' }, target: { schema: 'app', name: 'pay_old_migrated' } },
      { source: { schema: 'public', name: 'pay_2024_a' }, target: { schema: 'app', name: 'pay_2024_a_migrated' } },
    ]);
    expect(def.copyColumns).toEqual(['id', 'at', 'kind']);
    expect(def.keyColumns).toEqual(['at', 'id']);
  });

  it('refuses a partition listed before its parent, and too-long partition names', () => {
    const bad = { ...root, partitions: [root.partitions![2]!, root.partitions![0]!] };
    expect(() => buildTableDef(bad, mapTableName(root.source, spec), spec, [])).toThrow(/comes before its parent/);
    const long = { ...root, partitions: [part('p'.repeat(60), 'pay', 'DEFAULT')] };
    expect(() => buildTableDef(long, mapTableName(root.source, spec), spec, [])).toThrow(/longer than 63 bytes/);
  });

  it('partitionDdl leaves a partition identical to its parent alone', () => {
    expect(partitionDdl(part('p1', 'pay', 'DEFAULT'), { schema: 's', name: 'p1' }, { target: { schema: 's', name: 'pay' }, columns: cols }, noMapping)).toEqual([
      'CREATE TABLE "s"."p1" PARTITION OF "s"."pay" DEFAULT',
    ]);
  });

  it('drops ON ONLY from an index of a partitioned table', () => {
    const pair = { source: { schema: 'public', name: 'users' }, target: { schema: 'app', name: 'users_migrated' } };
    expect(createIndexDdl({ name: 'i', definition: 'CREATE INDEX i ON ONLY public.users USING btree (a)' }, pair, spec)).toBe(
      'CREATE INDEX "i_migrated" ON "app"."users_migrated" USING btree (a)',
    );
  });
});

describe('ensureExtensionDdl', () => {
  it('installs the extension in its source schema or refuses naming what needs it, quoting everything', () => {
    const sql = ensureExtensionDdl('btree_gist', 'Odd "Schema"', ['operator class public.gist_int4_ops for access method gist', `function f('$pgdts$')`]);
    expect(sql.startsWith('DO $pgdts1$\nDECLARE installed text;\nBEGIN\n')).toBe(true);
    expect(sql.endsWith('\nEND\n$pgdts1$')).toBe(true);
    expect(sql).toContain(`EXECUTE 'CREATE EXTENSION IF NOT EXISTS "btree_gist" WITH SCHEMA "Odd ""Schema""" CASCADE';`);
    expect(sql).toContain(`ELSIF installed <> 'Odd "Schema"' THEN`);
    expect(sql).toContain(`use operator class public.gist_int4_ops for access method gist, function f(''$pgdts$'') of extension btree_gist, which is not available on the target`);
  });
});

describe('planPostLoad (what finishTargetTables may run at the same time)', () => {
  const customers = buildTableDef(
    table({
      source: { schema: 'public', name: 'customers' },
      columns: [{ name: 'id', type: 'integer', notNull: true }],
      primaryKey: {
        name: 'customers_pkey',
        columns: ['id'],
        definition: 'PRIMARY KEY (id)',
        index: { name: 'customers_pkey', definition: 'CREATE UNIQUE INDEX customers_pkey ON public.customers USING btree (id)', deferrable: false, deferred: false },
      },
      estimatedRows: 10,
    }),
    { schema: 'public', name: 'customers' },
    noMapping,
    [],
  );
  const fkTo = (name: string, schema: string, ref: string) => ({
    name,
    columns: ['c'],
    referencedTable: { schema, name: ref },
    referencedColumns: ['id'],
    onUpdate: 'a' as const,
    onDelete: 'a' as const,
    match: 's' as const,
    deferrable: false,
    deferred: false,
    validated: true,
  });
  const ordersSrc = table({
    source: { schema: 'public', name: 'orders' },
    columns: [{ name: 'c', type: 'integer', notNull: false }],
    indexes: [
      { name: 'orders_c', definition: 'CREATE INDEX orders_c ON public.orders USING btree (c)' },
      { name: 'orders_c2', definition: 'CREATE INDEX orders_c2 ON public.orders USING hash (c)' },
    ],
    constraints: [{ name: 'orders_c_check', kind: 'check', definition: 'CHECK ((c > 0))' }],
    foreignKeys: [fkTo('orders_c_fk', 'public', 'customers'), fkTo('orders_x_fk', 'public', 'elsewhere')],
    estimatedRows: 1000,
  });
  const migrated = [
    { source: { schema: 'public', name: 'customers' }, target: { schema: 'public', name: 'customers' } },
    { source: ordersSrc.source, target: ordersSrc.source },
  ];
  const orders = buildTableDef(ordersSrc, ordersSrc.source, noMapping, migrated);
  const jobs = planPostLoad([customers, orders]);
  const of = (name: string) => jobs.filter((j) => j.table.name === name);
  const sqls = (j: PostLoadJob) => j.steps.map((st) => st.sql);

  it('builds every index of a table as its own job without lock, then one constraints job, then ANALYZE', () => {
    const o = of('orders');
    const builds = o.filter((j) => j.kind === 'index');
    expect(builds.map(sqls)).toEqual([['CREATE INDEX "orders_c" ON "public"."orders" USING btree (c)'], ['CREATE INDEX "orders_c2" ON "public"."orders" USING hash (c)']]);
    expect(builds.every((j) => j.locks.length === 0 && j.after.length === 0 && j.weight === 1000)).toBe(true);
    const cons = o.find((j) => j.kind === 'constraints')!;
    expect(sqls(cons)).toEqual(['ALTER TABLE "public"."orders" ADD CONSTRAINT "orders_c_check" CHECK ((c > 0))']);
    expect(cons.after).toEqual(builds.map((j) => j.id));
    const analyze = o.find((j) => j.kind === 'analyze')!;
    expect(sqls(analyze)).toEqual(['ANALYZE "public"."orders"']);
    expect(analyze.after).toEqual([cons.id]);
    expect(analyze.locks).toEqual(cons.locks);

    const c = of('customers');
    expect(c.map((j) => j.kind)).toEqual(['index', 'constraints', 'analyze']);
    expect(sqls(c[1]!)).toEqual(['ALTER TABLE "public"."customers" ADD CONSTRAINT "customers_pkey" PRIMARY KEY USING INDEX "customers_pkey"']);
  });

  it('adds foreign keys after ANALYZE of both tables, locking both', () => {
    const fks = jobs.filter((j) => j.kind === 'foreign-key');
    expect(fks).toHaveLength(2);
    const analyzeOf = (name: string) => of(name).find((j) => j.kind === 'analyze')!.id;
    expect(fks[0]!.after).toEqual([analyzeOf('orders'), analyzeOf('customers')]);
    expect(fks[0]!.locks).toHaveLength(2);
    expect(fks[0]!.locks).toContain(of('customers')[1]!.locks[0]);
    // Not migrated: after its own table only; still locks the other table's name.
    expect(fks[1]!.after).toEqual([analyzeOf('orders')]);
    expect(fks[1]!.locks).toEqual([of('orders')[2]!.locks[0], nameKey({ schema: 'public', name: 'elsewhere' })]);
    // Every dependency points at an earlier job: the plan always completes.
    for (const j of jobs) for (const a of j.after) expect(a).toBeLessThan(j.id);
  });

  it("splits into each table's own work (run when it is copied) and the foreign keys (run last), renumbered", () => {
    const own = selectPostLoad(planPostLoad([orders]), 'tables');
    expect(own.map((j) => j.kind)).toEqual(['index', 'index', 'constraints', 'analyze']);
    expect(own.map((j) => j.id)).toEqual([0, 1, 2, 3]);
    expect(own[2]!.after).toEqual([0, 1]);
    expect(own[3]!.after).toEqual([2]);
    const fks = selectPostLoad(jobs, 'foreign-keys');
    expect(fks.map((j) => [j.id, j.kind, j.after])).toEqual([
      [0, 'foreign-key', []],
      [1, 'foreign-key', []],
    ]);
    // The locks stay: two foreign keys on one table never run at once.
    expect(fks.map((j) => j.locks)).toEqual(jobs.filter((j) => j.kind === 'foreign-key').map((j) => j.locks));
    expect(selectPostLoad(jobs)).toEqual(jobs);
  });

  it('runs a partitioned table, and a TableDef from before postLoadSteps, statement by statement', () => {
    const parted = buildTableDef(
      table({
        source: { schema: 'public', name: 'p' },
        columns: [{ name: 'id', type: 'integer', notNull: true }],
        primaryKey: { name: 'p_pkey', columns: ['id'], definition: 'PRIMARY KEY (id)' },
        partitionKey: 'RANGE (id)',
        indexes: [{ name: 'p_i', definition: 'CREATE INDEX p_i ON ONLY public.p USING btree (id)' }],
        partitions: [{ name: { schema: 'public', name: 'p1' }, parent: { schema: 'public', name: 'p' }, bound: 'DEFAULT', columns: [], replicaIdentity: 'default', indexes: [], constraints: [], foreignKeys: [] }],
      }),
      { schema: 'public', name: 'p' },
      noMapping,
      [],
    );
    const { postLoadSteps: _, ...legacy } = orders;
    const plan = planPostLoad([parted, legacy]);
    expect(plan.map((j) => j.kind)).toEqual(['ordered', 'analyze', 'ordered', 'analyze', 'foreign-key', 'foreign-key']);
    expect(sqls(plan[0]!)).toEqual(parted.postLoad);
    expect(sqls(plan[2]!)).toEqual(orders.postLoad.slice(0, -2));
    // Unknown referenced tables: after every table, one at a time.
    expect(plan[4]!.after).toEqual([1, 3]);
    expect(plan[4]!.locks[1]).toBe(plan[5]!.locks[1]);
  });

  it('maps a foreign key to a partition onto its partitioned table', () => {
    const parted = { ...customers, target: { schema: 'public', name: 'root' }, partitioned: true, partitions: [{ source: { schema: 'public', name: 'customers' }, target: { schema: 'public', name: 'customers' } }] };
    const plan = planPostLoad([parted, orders]);
    const fk = plan.find((j) => j.kind === 'foreign-key')!;
    expect(fk.locks).toContain(nameKey({ schema: 'public', name: 'root' }));
  });
});
