// The meshctl commands that answer what a view shows, for the command box under every view:
// one line per request meshctl makes. Only commands and flags meshctl has are printed
// (cli/commands/*.cc); where meshctl has no exact equivalent (several namespaces in one
// answer, the graph's filters) the lines are the closest it has, one per namespace.
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});

  // A word as a POSIX shell reads it back: as is when it is plain, else single-quoted.
  function quote(word) {
    const text = String(word);
    if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(text)) return text;
    return `'${text.replace(/'/g, `'\\''`)}'`;
  }

  const line = (...words) => ['meshctl', ...words.map(quote)].join(' ');

  // "NS/TYPE/NAME" seen from namespace `ns`: "TYPE/NAME", and its namespace when another.
  function peer(ref, flag, ns) {
    const parsed = nm.state.parseRef(ref);
    const words = [`--${flag}`, `${parsed.type}/${parsed.name}`];
    if (parsed.namespace !== ns) words.push(`--${flag}-namespace`, parsed.namespace);
    return words;
  }

  // The lines of a state's view.
  function forView(state) {
    const t = ['-t', state.t];
    switch (state.view) {
      case 'namespaces':
        return [line('stat', 'ns', ...t)];
      case 'workloads':
        return state.ns.map((ns) => line('stat', state.type, '-n', ns, ...t));
      case 'workload': {
        const ref = nm.state.parseRef(state.sel);
        const self = `${ref.type}/${ref.name}`;
        const n = ['-n', ref.namespace];
        const lines = [line('stat', self, ...n, ...t)];
        // Its callers and (but for a Service, which calls nothing) its callees: stat's rows
        // of the traffic to it and from it.
        const rows = ref.type === 'svc' ? 'deploy' : ref.type;
        lines.push(line('stat', rows, ...n, '--to', self, ...t));
        if (ref.type !== 'svc') {
          lines.push(line('stat', rows, ...n, '--from', self, ...t));
          lines.push(line('routes', self, ...n, ...t));
        }
        lines.push(line('stat', 'po', ...n, ...t));
        return lines;
      }
      case 'graph':
        return state.ns.map((ns) => line('edges', state.type, '-n', ns, ...t));
      case 'tap': {
        const tap = state.tap;
        if (!tap.target) return [];
        const target = nm.state.parseRef(tap.target);
        const words = ['tap', `${target.type}/${target.name}`, '-n', target.namespace];
        if (tap.to) words.push(...peer(tap.to, 'to', target.namespace));
        if (tap.method) words.push('--method', tap.method);
        if (tap.path) words.push('--path', tap.path);
        if (tap.authority) words.push('--authority', tap.authority);
        if (tap.scheme) words.push('--scheme', tap.scheme);
        words.push('--max-rps', String(tap.rps));
        return [line(...words)];
      }
      default:
        return [];
    }
  }

  // The explain of pod "NS/NAME" on its node, as the shell runs it through the aggregator.
  function explain(pod, node) {
    return line('shell', '--node', node, '-c', `explain ${pod}`);
  }

  nm.commands = {quote, forView, explain};
})();
