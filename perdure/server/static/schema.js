// A payload to start from, made from a task's JSON schema (its type hints): defaults and
// examples where the schema gives them, otherwise the simplest value of each type.

const MAX_DEPTH = 8;

export function example(schema, root = schema, depth = 0) {
  if (!schema || typeof schema !== "object" || depth > MAX_DEPTH) return null;
  if (schema.$ref) return example(resolve(root, schema.$ref), root, depth + 1);
  if ("default" in schema) return schema.default;
  if ("const" in schema) return schema.const;
  if (schema.examples?.length) return schema.examples[0];
  if (schema.enum?.length) return schema.enum[0];
  const choices = schema.anyOf ?? schema.oneOf;
  if (choices?.length) return example(choices.find((c) => c.type !== "null") ?? choices[0], root, depth + 1);
  if (schema.allOf?.length) {
    return Object.assign({}, ...schema.allOf.map((part) => example(part, root, depth + 1)));
  }
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  return (BY_TYPE[type] ?? BY_TYPE[schema.properties ? "object" : "null"])(schema, root, depth);
}

const BY_TYPE = {
  object: (schema, root, depth) =>
    Object.fromEntries(
      Object.entries(schema.properties ?? {}).map(([name, property]) => [
        name,
        example(property, root, depth + 1),
      ]),
    ),
  array: (schema, root, depth) => (schema.prefixItems ?? []).map((item) => example(item, root, depth + 1)),
  string: (schema) => stringExample(schema),
  integer: (schema) => numberExample(schema, 1),
  number: (schema) => numberExample(schema, 0),
  boolean: () => false,
  null: () => null,
};

function stringExample(schema) {
  const now = new Date();
  switch (schema.format) {
    case "date-time":
      return now.toISOString();
    case "date":
      return now.toISOString().slice(0, 10);
    case "time":
      return now.toISOString().slice(11, 19);
    case "uuid":
      return crypto.randomUUID?.() ?? "00000000-0000-4000-8000-000000000000";
    case "email":
      return "someone@example.com";
    case "uri":
      return "https://example.com";
    default:
      return "";
  }
}

function numberExample(schema, step) {
  if (typeof schema.minimum === "number") return schema.minimum;
  if (typeof schema.exclusiveMinimum === "number") return schema.exclusiveMinimum + step;
  if (typeof schema.maximum === "number" && schema.maximum < 0) return schema.maximum;
  return 0;
}

function resolve(root, ref) {
  if (!ref.startsWith("#/")) return null;
  let target = root;
  for (const part of ref.slice(2).split("/")) {
    target = target?.[part.replaceAll("~1", "/").replaceAll("~0", "~")];
  }
  return target ?? null;
}

/** What the schema says about a task's payload in one line, e.g. "topic: string, max_turns?: integer". */
export function signature(schema, root = schema) {
  const resolved = schema?.$ref ? resolve(root, schema.$ref) : schema;
  if (!resolved?.properties) return resolved?.type ?? resolved?.title ?? "";
  const required = new Set(resolved.required ?? []);
  return Object.entries(resolved.properties)
    .map(([name, property]) => `${name}${required.has(name) ? "" : "?"}: ${typeName(property, root)}`)
    .join(", ");
}

function typeName(schema, root) {
  if (schema.$ref) return schema.$ref.split("/").pop();
  const choices = schema.anyOf ?? schema.oneOf;
  if (choices) return choices.map((c) => typeName(c, root)).join(" | ");
  if (schema.type === "array") return `${schema.items ? typeName(schema.items, root) : "any"}[]`;
  return Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type ?? "any");
}
