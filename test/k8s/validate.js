// Validates Kubernetes manifests (a multi-document YAML file, such as `helm template`'s
// output) against the Kubernetes API's own types, strictly: a field the API does not have
// (a misspelt `hostNetwrok`) is an error, as are a wrong type, a missing required field, a
// duplicate key and an object of a kind the API does not serve.
//
//   node validate.js NODE_MODULES MANIFESTS.yaml
//
// NODE_MODULES holds the packages test/install-deps.sh installs (typescript, yaml,
// kubernetes-models, @kubernetes-models/prometheus-operator). Prints one line per problem,
// "Kind namespace/name: field.path: what is wrong", and exits 1 if there is any, 0 if there
// is none, 2 if it cannot run.
//
// Each object is checked twice:
// - against the TypeScript declarations of kubernetes-models, generated from the Kubernetes
//   OpenAPI document (version 5.1.0, pinned by test/install-deps.sh: Kubernetes 1.36; the
//   Prometheus Operator's CRDs for monitoring.coreos.com), by the
//   TypeScript compiler: the object becomes a typed object literal, whose unknown
//   properties, wrong types and missing required fields the compiler reports at any depth;
// - by the JSON-schema validators kubernetes-models compiled from the same document, for
//   what the types do not say (formats such as int-or-string).
// The OpenAPI document alone is not strict: it allows unknown properties, as the API server
// does unless asked for strict field validation, and so do those validators. The typed
// literals are strict, as kubectl's --validate=strict is.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { pathToFileURL } = require("url");

function fail(message) {
  process.stderr.write(`validate.js: ${message}\n`);
  process.exit(2);
}

// The module (a path under NODE_MODULES, without extension) and interface that declare
// apiVersion/kind, or null for something that names no kind.
function declarationOf(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z]\w*$/.test(kind)) {
    return null;
  }
  const parts = apiVersion.split("/");
  if (parts.length > 2 || parts.some((part) => !/^[a-z0-9.-]+$/.test(part))) return null;
  const [group, version] = parts.length === 2 ? parts : ["", parts[0]];
  let module;
  if (group === "monitoring.coreos.com") {
    module = `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  } else if (group === "") {
    module = `kubernetes-models/${version}/${kind}`;
  } else {
    module = `kubernetes-models/${group}/${version}/${kind}`;
  }
  return { module, type: `I${kind}` };
}

// The object as a TypeScript literal (its JSON, which TypeScript reads as such). `lines`
// gets the field path of every line after the first, to name the field a diagnostic is on.
function literal(value, indent, fieldPath, lines) {
  const pad = "  ".repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    const items = value.map((item, i) => {
      const at = `${fieldPath}[${i}]`;
      lines.push(at);
      return `${pad}  ${literal(item, indent + 1, at, lines)}`;
    });
    lines.push(fieldPath);
    return `[\n${items.join(",\n")}\n${pad}]`;
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 0) return "{}";
    const members = keys.map((key) => {
      const at = fieldPath ? `${fieldPath}.${key}` : key;
      lines.push(at);
      return `${pad}  ${JSON.stringify(key)}: ${literal(value[key], indent + 1, at, lines)}`;
    });
    lines.push(fieldPath);
    return `{\n${members.join(",\n")}\n${pad}}`;
  }
  return JSON.stringify(value);
}

function describe(object) {
  const metadata = (object && typeof object.metadata === "object" && object.metadata) || {};
  const name = metadata.namespace ? `${metadata.namespace}/${metadata.name}` : metadata.name;
  return `${object.kind} ${name}`;
}

// The properties of an object literal that the type it is assigned to does not have.
function unknownFields(ts, checker, literalNode) {
  const contextual = checker.getContextualType(literalNode);
  if (!contextual) return [];
  const type = checker.getNonNullableType(contextual);
  const candidates = type.isUnion() ? type.types : [type];
  const objectTypes = candidates.filter((t) => (t.flags & ts.TypeFlags.Object) !== 0);
  if (objectTypes.length === 0) return [];
  // A map (labels, annotations, resource quantities) takes any key.
  if (objectTypes.some((t) => checker.getIndexInfosOfType(t).length > 0)) return [];
  const unknown = [];
  for (const property of literalNode.properties) {
    if (!ts.isPropertyAssignment(property)) continue;
    const name = ts.isStringLiteral(property.name) ? property.name.text : property.name.getText();
    if (!objectTypes.some((t) => checker.getPropertyOfType(t, name))) {
      unknown.push({ property, typeName: checker.typeToString(objectTypes[0]) });
    }
  }
  return unknown;
}

// Problems the TypeScript compiler finds in the objects as typed literals.
function checkTypes(ts, modules, objects, problems) {
  const source = [];
  const owners = [];  // per line of the source: [object index, field path]
  objects.forEach((object, index) => {
    const { module, type } = object.declaration;
    source.push(`import type { ${type} as T${index} } from ${JSON.stringify(module)};`);
    owners.push([index, "apiVersion/kind"]);
    const lines = [];
    const text = `export const o${index}: T${index} = ${literal(object.value, 0, "", lines)};`;
    text.split("\n").forEach((line, i) => {
      source.push(line);
      owners.push([index, i === 0 ? "" : lines[i - 1]]);
    });
  });
  if (source.length === 0) return;

  const directory = fs.mkdtempSync(path.join(os.tmpdir(), "nodemesh-validate-"));
  try {
    const file = path.join(directory, "manifests.ts");
    fs.writeFileSync(file, source.join("\n") + "\n");
    const program = ts.createProgram([file], {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      // Every package import, from the manifests and between the declarations, is found
      // in NODE_MODULES by its path (a subpath export is a file of the same path there).
      baseUrl: modules,
      paths: { "*": ["*"] },
      types: [],
    });
    // The compiler reports one problem per statement; unknown fields are searched for here
    // at every depth, so that each is named.
    const checker = program.getTypeChecker();
    const sourceFile = program.getSourceFile(file);
    const lineOf = (node) => sourceFile.getLineAndCharacterOfPosition(node.getStart()).line;
    const visit = (node) => {
      if (ts.isObjectLiteralExpression(node)) {
        const unknown = unknownFields(ts, checker, node);
        for (const { property, typeName } of unknown) {
          const [index, at] = owners[lineOf(property)];
          problems.push(`${describe(objects[index].value)}: ${at}: unknown field ` +
                        `${property.name.getText()} (not in ${typeName})`);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sourceFile);
    for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
      // "Object literal may only specify known properties": named above, every one.
      if (diagnostic.code === 2353 || diagnostic.code === 2561) continue;
      const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, " ");
      if (!diagnostic.file || path.resolve(diagnostic.file.fileName) !== path.resolve(file)) {
        problems.push(`TypeScript: ${message}`);
        continue;
      }
      const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
      const [index, at] = owners[line];
      problems.push(`${describe(objects[index].value)}: ${at || "(the object)"}: ${message}`);
    }
  } finally {
    fs.rmSync(directory, { recursive: true, force: true });
  }
}

// Problems kubernetes-models' JSON-schema validators find.
async function checkSchemas(modules, objects, problems) {
  for (const { value, declaration } of objects) {
    const file = path.join(modules, `${declaration.module}.js`);
    if (!fs.existsSync(file)) continue;  // reported by the compiler: no such module
    const Model = (await import(pathToFileURL(file).href))[value.kind];
    if (typeof Model !== "function") continue;
    try {
      new Model(value).validate();
    } catch (error) {
      problems.push(`${describe(value)}: ${error.message}`);
    }
  }
}

async function main() {
  const [modules, file] = process.argv.slice(2);
  if (!modules || !file) fail("usage: node validate.js NODE_MODULES MANIFESTS.yaml");
  let ts, YAML;
  try {
    ts = require(path.join(modules, "typescript"));
    YAML = require(path.join(modules, "yaml"));
  } catch (error) {
    fail(`${error.message}: run bash test/install-deps.sh (it installs the validator's packages)`);
  }
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    fail(error.message);
  }

  const problems = [];
  const objects = [];
  for (const document of YAML.parseAllDocuments(text, { uniqueKeys: true })) {
    if (document.errors.length > 0) {
      for (const error of document.errors) problems.push(`YAML: ${error.message}`);
      continue;
    }
    const value = document.toJS();
    if (value === null || value === undefined) continue;  // an empty document
    if (typeof value !== "object" || Array.isArray(value)) {
      problems.push(`a document is not an object: ${JSON.stringify(value).slice(0, 80)}`);
      continue;
    }
    const declaration = declarationOf(value.apiVersion, value.kind);
    if (declaration === null) {
      problems.push(`${describe(value)}: no valid apiVersion and kind`);
      continue;
    }
    objects.push({ value, declaration });
  }
  checkTypes(ts, modules, objects, problems);
  await checkSchemas(modules, objects, problems);

  for (const problem of problems) process.stdout.write(`${problem}\n`);
  process.stdout.write(`${objects.length} objects, ${problems.length} problems\n`);
  process.exit(problems.length === 0 ? 0 : 1);
}

main().catch((error) => fail(error.stack || String(error)));
