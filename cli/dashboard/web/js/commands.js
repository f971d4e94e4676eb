// The meshctl commands that answer what a view shows, for the command box under every view:
// one line per answer. Several namespaces and the graph's filters are one View for meshctl
// too (`-n a,b`, `edges --failing ...`), so the workloads and the graph are one line each,
// giving the same answer as the page. The one inexact line is a workload's pods: `stat po`
// lists every pod of its namespace.
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

  // The graph's filters as edges' flags (graph.js's requestParams, in meshctl's words).
  function graphFilters(state) {
    const words = [];
    if (state.failing) words.push('--failing');
    if (state.around) words.push(...peer(state.around, 'around', state.ns[0]));
    for (const name of state.hide) {
      if (name !== nm.state.HIDE_EXTERNAL) words.push('--hide-namespace', name);
    }
    if (state.hide.includes(nm.state.HIDE_EXTERNAL)) words.push('--hide-external');
    if (state.all) words.push('--all');
    return words;
  }

  // The lines of a state's view.
  function forView(state) {
    const t = ['-t', state.t];
    switch (state.view) {
      case 'namespaces':
        return [line('stat', 'ns', ...t)];
      case 'workloads':
        return [line('stat', state.type, '-n', state.ns.join(','), ...t)];
      case 'workload': {
        const ref = nm.state.parseRef(state.sel);
        const self = `${ref.type}/${ref.name}`;
        const n = ['-n', ref.namespace];
        // Its row, its calls in and out, the routes it serves (a Service: the routes dialled
        // to it), its pods (a Service has none of its own).
        const lines = [
          line('stat', self, ...n, ...t),
          line('edges', ref.type, ...n, '--around', self, ...t),
          line('routes', self, ...n, ...t),
        ];
        if (ref.type !== 'svc') lines.push(line('stat', 'po', ...n, ...t));
        return lines;
      }
      case 'graph':
        return [line('edges', state.type, '-n', state.ns.join(','), ...t, ...graphFilters(state))];
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
