/*-------------------------------------------------------------------------
 *
 * capture_items.c
 *	  The parts of a mapping that are text before they are columns: the
 *	  column names it gives (exact, or in double quotes), the pieces a
 *	  text[] literal split at a comma, and contents_from=table(column, ...)
 *	  turned into the query that reads an order's items from a child table.
 *	  capture_mapping.c resolves the rest.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/regproc.h"
#include "utils/varlena.h"

#include "capture.h"

static int	item_field_by_name(const char *name);

/*
 * A column's name as a mapping gives it.  Mappings name columns exactly
 * (email=Email is the column Email); a name in double quotes, as SQL
 * writes a mixed-case one ("Email"), is taken without its quotes.
 */
const char *
tt_bare_name(const char *name)
{
	size_t		len = strlen(name);
	StringInfoData unquoted;

	if (len < 2 || name[0] != '"' || name[len - 1] != '"')
		return name;
	initStringInfo(&unquoted);
	for (size_t i = 1; i < len - 1; i++)
	{
		appendStringInfoChar(&unquoted, name[i]);
		if (name[i] == '"' && name[i + 1] == '"')
			i++;
	}
	return unquoted.data;
}

/* A live column's number, or InvalidAttrNumber */
AttrNumber
tt_column_by_name(TupleDesc desc, const char *name)
{
	name = tt_bare_name(name);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/* An item field's index in tt_item_fields, or -1 */
static int
item_field_by_name(const char *name)
{
	for (int i = 0; i < tt_n_item_fields; i++)
		if (strcmp(tt_item_fields[i].name, name) == 0)
			return i;
	return -1;
}

/*
 * The query that builds contents[] from a child table, for the mapping
 * contents_from=table(column) or table(column, field=column, ...): the
 * items whose column equals the order id, each item field read from the
 * column named for it, else from the first column with one of its usual
 * names (tt_item_fields).  The keys are the item fields', so the builder
 * reads them as it reads a jsonb column's items.
 */
char *
tt_items_query(const char *spec, bool strict, List **notes, char **qualified_spec)
{
	char	   *copy = pstrdup(spec);
	char	   *open = strchr(copy, '(');
	char	   *close = strrchr(copy, ')');
	char	   *fkcol;
	const char *chosen[16] = {NULL};
	List	   *parts;
	ListCell   *lc;
	Oid			relid;
	Relation	child;
	TupleDesc	desc;
	StringInfoData sql;
	bool		any = false;

	Assert(tt_n_item_fields <= lengthof(chosen));
	if (open == NULL || close == NULL || close < open || close[1] != '\0')
	{
		mapping_problem(strict, notes, "contents_from must be table(column), not \"%s\"", spec);
		return NULL;
	}
	*open = '\0';
	*close = '\0';
	/* column names as the rest of a mapping takes them: exactly */
	parts = NIL;
	for (char *p = strtok(open + 1, ","); p != NULL; p = strtok(NULL, ","))
	{
		size_t		len = strlen(p);
		const char *t = p;

		tt_trim(&t, &len);
		parts = lappend(parts, pnstrdup(t, len));
	}
	if (parts == NIL || ((char *) linitial(parts))[0] == '\0')
	{
		mapping_problem(strict, notes, "contents_from must be table(column) or table(column, field=column, ...), not \"%s\"", spec);
		return NULL;
	}
	fkcol = linitial(parts);
	relid = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(copy)),
							 AccessShareLock, true);
	if (!OidIsValid(relid))
	{
		mapping_problem(strict, notes, "contents_from table \"%s\" does not exist", copy);
		return NULL;
	}
	child = table_open(relid, NoLock);
	desc = RelationGetDescr(child);
	if (tt_column_by_name(desc, fkcol) == InvalidAttrNumber)
	{
		mapping_problem(strict, notes, "column \"%s\" of contents_from table \"%s\" does not exist",
						fkcol, copy);
		table_close(child, NoLock);
		return NULL;
	}
	/* the item fields named in the parentheses */
	for_each_from(lc, parts, 1)
	{
		char	   *item = lfirst(lc);
		char	   *eq = strchr(item, '=');
		int			i;

		if (eq != NULL)
			*eq = '\0';
		i = eq != NULL ? item_field_by_name(item) : -1;
		if (i < 0 || tt_column_by_name(desc, eq + 1) == InvalidAttrNumber)
		{
			mapping_problem(strict, notes, i < 0 ?
							"contents_from: \"%s\" is not field=column with an item field (content_id, content_name, content_category, brand, quantity, price, price_minor)" :
							"contents_from: column \"%s\" of table \"%s\" does not exist",
							i < 0 ? item : eq + 1, copy);
			table_close(child, NoLock);
			return NULL;
		}
		chosen[i] = eq + 1;
	}
	/* price and price_minor are one field in two units: a named one wins */
	for (int i = 0; i < tt_n_item_fields; i++)
	{
		const char *name = tt_item_fields[i].name;
		bool		price_named = chosen[item_field_by_name("price")] != NULL ||
			chosen[item_field_by_name("price_minor")] != NULL;

		if (chosen[i] != NULL ||
			(price_named && (strcmp(name, "price") == 0 || strcmp(name, "price_minor") == 0)))
			continue;
		for (int k = 0; k < lengthof(tt_item_fields[i].keys) && tt_item_fields[i].keys[k] != NULL; k++)
			if (tt_column_by_name(desc, tt_item_fields[i].keys[k]) != InvalidAttrNumber)
			{
				chosen[i] = tt_item_fields[i].keys[k];
				break;
			}
	}
	if (chosen[0] == NULL)
	{
		mapping_problem(strict, notes, "contents_from table \"%s\" has no content_id, product_id or sku column; name one with %s(%s, content_id=column)",
						copy, copy, fkcol);
		table_close(child, NoLock);
		return NULL;
	}

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(");
	for (int i = 0; i < tt_n_item_fields; i++)
	{
		if (chosen[i] == NULL)
			continue;
		appendStringInfo(&sql, "%s%s, c.%s%s", any ? ", " : "",
						 quote_literal_cstr(tt_item_fields[i].name),
						 quote_identifier(tt_bare_name(chosen[i])),
						 i == 0 ? "::pg_catalog.text" : "");
		any = true;
	}
	*qualified_spec = psprintf("%s(%s",
							   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(child)),
														  RelationGetRelationName(child)),
							   fkcol);
	for_each_from(lc, parts, 1)
	{
		char	   *item = lfirst(lc);

		*qualified_spec = psprintf("%s, %s=%s", *qualified_spec, item,
								   item + strlen(item) + 1);
	}
	*qualified_spec = psprintf("%s)", *qualified_spec);
	appendStringInfo(&sql, "))) FROM %s c WHERE c.%s OPERATOR(pg_catalog.=) $1",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(child)),
												RelationGetRelationName(child)),
					 quote_identifier(tt_bare_name(fkcol)));
	table_close(child, NoLock);
	return sql.data;
}

/*
 * A mapping written as a text[] literal is split at every comma, also at
 * those inside contents_from=table(column, field=column): join such pieces
 * again.  Returns the new count.
 */
int
tt_join_mapping(char **args, int nargs)
{
	int			out = 0;

	for (int i = 0; i < nargs; i++)
	{
		int			depth = 0;

		args[out] = args[i];
		for (const char *p = args[i]; *p; p++)
			depth += (*p == '(') - (*p == ')');
		while (depth > 0 && i + 1 < nargs)
		{
			i++;
			args[out] = psprintf("%s, %s", args[out], args[i]);
			for (const char *p = args[i]; *p; p++)
				depth += (*p == '(') - (*p == ')');
		}
		out++;
	}
	return out;
}

