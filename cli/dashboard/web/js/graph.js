// The call graph view: a ViewResponse of kind GRAPH drawn as namespace boxes of workloads,
// laid out by elkjs in one Web Worker, drawn as hand-written SVG.
//
// Layout (docs/ARCHITECTURE.md, the dashboard): one ELK layered layout per namespace box (its
// workloads and the calls between them), then one of the boxes themselves, ordered by the
// calls between namespaces, left to right. Calls from one box to another are not given to
// ELK (laying out everything at once is ten times slower at 1,000 workloads): the page draws
// them as curves above the boxes. The worker is made once, when the script loads, so that its
// 1.6 MB script compiles while the view's request is in flight and later refreshes run warm;
// a refresh whose graph has the same nodes and calls reuses the previous layout.
//
// Everything runs on the page's main thread except ELK's work in its worker. Names of
// workloads and namespaces come from the cluster: they are only ever set as text or
// attribute values, never parsed as markup.
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // Success rate classes of calls and workloads; failing_below is the aggregator's default.
  const HEALTHY_FROM = 0.99;
  const FAILING_BELOW = 0.95;
  // The aggregator withholds a graph past these (GraphFilter), draw anyway up to the last.
  const MAX_NODES = 300;
  const MAX_EDGES = 1500;
  const DRAW_ANYWAY_MAX_NODES = 5000;
  const DRAW_ANYWAY_WARN_NODES = 1000;
  // The entry of `hide` that hides the peers outside the cluster (state.js).
  const HIDE_EXTERNAL = nm.state.HIDE_EXTERNAL;
  const OUTSIDE_BOX = ':outside';

  const NODE_WIDTH = 180;
  const NODE_HEIGHT = 36;
  const NAME_CHARS = 25;  // what fits in NODE_WIDTH at the node's font size
  const BOX_LABEL_HEIGHT = 22;
  // ELK's layered algorithm with the options measured fastest at 1,000 workloads: longest
  // path layering, simple node placement, one sweep of crossing minimisation.
  const FAST_LAYERED = {
    'elk.algorithm': 'layered',
    'elk.direction': 'RIGHT',
    'elk.edgeRouting': 'POLYLINE',
    'elk.layered.layering.strategy': 'LONGEST_PATH',
    'elk.layered.nodePlacement.strategy': 'SIMPLE',
    'elk.layered.thoroughness': '1',
    'elk.layered.cycleBreaking.strategy': 'GREEDY',
  };
  const BOX_OPTIONS = Object.assign({}, FAST_LAYERED, {
    'elk.padding': `[top=${BOX_LABEL_HEIGHT + 10},left=14,bottom=14,right=14]`,
    'elk.spacing.nodeNode': '12',
    'elk.layered.spacing.nodeNodeBetweenLayers': '48',
  });
  // The boxes, left to right by the calls between them.
  const BOXES_OPTIONS = Object.assign({}, FAST_LAYERED, {
    'elk.spacing.nodeNode': '40',
    'elk.spacing.componentComponent': '40',
    'elk.layered.spacing.nodeNodeBetweenLayers': '120',
  });
  // Past this many boxes their chain wraps into rows (a few stay on one line, in call order).
  const WRAP_FROM_BOXES = 7;
  const WRAPPED = {'elk.layered.wrapping.strategy': 'MULTI_EDGE', 'elk.aspectRatio': '1.6'};

  const FLOW_EDGES_PER_BOX = 3;

  // The one layout engine of the page's life. Its worker starts now and lays out a graph of
  // one node at once, so that its code is compiled while the view's request is in flight.
  const elk = typeof ELK === 'function' ? new ELK({workerUrl: '/elk-worker.min.js'}) : null;
  if (elk) {
    const one = {id: ':warm', layoutOptions: BOX_OPTIONS,
      children: [{id: 'a', width: 1, height: 1}]};
    // A worker that cannot start fails the view's own layout, which says so.
    elk.layout(one).catch(() => {});
  }
  // The last layout, reused while the graph's shape does not change: {key, boxes, top}.
  let lastLayout = null;
  // The viewBox the user panned or zoomed to, kept across refreshes of the same graph.
  let keptView = null;

  // ---- Figures ----

  const number = (value) => Number(value || 0);

  function healthOf(requests, successRate) {
    if (number(requests) === 0) return 'idle';
    if (successRate >= HEALTHY_FROM) return 'healthy';
    if (successRate >= FAILING_BELOW) return 'degraded';
    return 'failing';
  }

  // Stroke width of a call: 1 px at 0.1 RPS to 8 px at 1,000 RPS and more, on a log scale.
  function widthOf(rps) {
    return Math.min(8, 1 + 1.75 * Math.log10(1 + 10 * rps));
  }

  // Figures as meshctl prints them.
  const {percent, latency: duration} = nm.table.format;
  const perSecond = (rps) => `${nm.table.format.rps(rps)} rps`;
  const thousands = (value) => value.toLocaleString('en-US');

  // ---- Names ----

  // Ids are NS/TYPE/NAME with TYPE short (nm.state.refOf); a peer outside the cluster is
  // /external/NAME.
  function isExternal(resource) {
    return resource.type === 'external';
  }

  // ---- The request ----

  // The filter.* query parameters of the graph request for a state.
  function requestParams(state) {
    const params = new URLSearchParams();
    if (state.failing) params.append('filter.onlyFailing', 'true');
    const around = state.around ? nm.state.parseRef(state.around) : null;
    if (around) {
      params.append('filter.around.type', nm.state.LONG_TYPES[around.type]);
      params.append('filter.around.namespace', around.namespace);
      params.append('filter.around.name', around.name);
    }
    for (const name of state.hide || []) {
      if (name === HIDE_EXTERNAL) params.append('filter.hideExternal', 'true');
      else params.append('filter.hideNamespaces', name);
    }
    if (state.all) params.append('filter.drawAnyway', 'true');
    return params;
  }

  // ---- DOM helpers (text and attribute values only, never markup) ----

  const html = nm.table.el;  // text children only

  function svg(tag, attributes) {
    const element = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== undefined && value !== null) element.setAttribute(name, String(value));
    }
    return element;
  }

  function svgText(x, y, text, className) {
    const element = svg('text', {x, y, class: className});
    element.textContent = text;
    return element;
  }

  function shortened(text, chars) {
    return text.length <= chars ? text : text.slice(0, chars - 1) + '…';
  }

  const withoutArray = (list, item) => list.filter((x) => x !== item);

  // ---- The graph's model ----

  // Nodes by id (rows of the view, plus any edge end without one), edges, and boxes: one per
  // namespace, and one for the peers outside the cluster.
  function modelOf(view, state) {
    const nodes = new Map();
    const addNode = (resource, row) => {
      const id = nm.state.refOf(resource);
      if (!nodes.has(id)) {
        const box = isExternal(resource) ? OUTSIDE_BOX : resource.namespace || '';
        nodes.set(id, {id, resource, row: row || {}, box, edges: []});
      }
      return nodes.get(id);
    };
    for (const row of (view.stats && view.stats.rows) || []) addNode(row.resource || {}, row);
    const edges = [];
    for (const edge of (view.edges && view.edges.edges) || []) {
      const source = addNode(edge.source || {});
      const target = addNode(edge.destination || {});
      const item = {id: `${source.id}>${target.id}`, edge, source, target};
      edges.push(item);
      source.edges.push(item);
      if (target !== source) target.edges.push(item);
    }
    const boxes = new Map();
    for (const node of nodes.values()) {
      if (!boxes.has(node.box)) {
        const chosen = (state.ns || []).includes(node.box);
        const kind = node.box === OUTSIDE_BOX ? 'outside' : chosen ? 'chosen' : 'far';
        boxes.set(node.box, {id: node.box, kind, nodes: [], edges: []});
      }
      boxes.get(node.box).nodes.push(node);
    }
    const crossing = [];
    for (const item of edges) {
      if (item.source.box === item.target.box) boxes.get(item.source.box).edges.push(item);
      else crossing.push(item);
    }
    return {nodes, edges, boxes, crossing};
  }

  // What the layout depends on, so that an unchanged graph is not laid out again.
  function shapeKey(model) {
    const parts = [];
    for (const box of model.boxes.values()) {
      const ids = (list) => list.map((item) => item.id).join(',');
      parts.push(box.id, ids(box.nodes), ids(box.edges));
    }
    parts.push(model.crossing.map((e) => `${e.source.box}>${e.target.box}`).join(','));
    return parts.join('\n');
  }

  // ---- Layout ----

  // The edges that order the boxes: between two namespaces that call each other, the
  // direction with more calls; of those, each box's FLOW_EDGES_PER_BOX heaviest. All pairs of
  // 20 namespaces calling each other make ELK lay out hundreds of long edges it never draws
  // (a second); a few per box give the same left to right order.
  function flowBetweenBoxes(model) {
    const calls = new Map();
    for (const item of model.crossing) {
      const pair = `${item.source.box}\n${item.target.box}`;
      calls.set(pair, (calls.get(pair) || 0) + 1);
    }
    const heaviest = new Map();  // box -> [[count, target]]
    for (const [pair, count] of calls) {
      const [source, target] = pair.split('\n');
      const back = calls.get(`${target}\n${source}`) || 0;
      if (back > count || (back === count && source > target)) continue;
      if (!heaviest.has(source)) heaviest.set(source, []);
      heaviest.get(source).push([count, target]);
    }
    const flow = [];
    for (const [source, targets] of heaviest) {
      targets.sort((a, b) => b[0] - a[0] || a[1].localeCompare(b[1]));
      for (const [, target] of targets.slice(0, FLOW_EDGES_PER_BOX)) flow.push([source, target]);
    }
    return flow;
  }

  async function layOut(model) {
    const key = shapeKey(model);
    if (lastLayout && lastLayout.key === key) return lastLayout;
    if (!elk) throw new Error('the layout engine (/elk-api.js) did not load: reload the page');
    const boxes = await Promise.all(
      [...model.boxes.values()].map((box) =>
        elk.layout({
          id: box.id,
          layoutOptions: BOX_OPTIONS,
          children: box.nodes.map((n) => ({id: n.id, width: NODE_WIDTH, height: NODE_HEIGHT})),
          edges: box.edges.map((e) => ({id: e.id, sources: [e.source.id], targets: [e.target.id]})),
        })));
    const wrapped = boxes.length >= WRAP_FROM_BOXES;
    const top = await elk.layout({
      id: ':root',
      layoutOptions: wrapped ? {...BOXES_OPTIONS, ...WRAPPED} : BOXES_OPTIONS,
      children: boxes.map((b) => ({id: b.id, width: b.width, height: b.height})),
      edges: flowBetweenBoxes(model).map(([source, target], i) =>
        ({id: `:flow${i}`, sources: [source], targets: [target]})),
    });
    lastLayout = {key, boxes, top};
    return lastLayout;
  }

  // ---- Drawing ----

  function edgeAttributes(item, d) {
    const {edge} = item;
    const health = healthOf(edge.requests, number(edge.successRate));
    const rps = number(edge.rps);
    const width = widthOf(rps);
    const attributes = {
      d,
      class: `nm-edge nm-${health}`,
      'marker-end': `url(#nm-arrow-${health})`,
      'stroke-width': width.toFixed(2),
      'data-edge': item.id,
      'data-health': health,
      'data-rps': String(rps),
      'data-width': width.toFixed(2),
    };
    if (health !== 'idle') attributes['data-success-rate'] = String(number(edge.successRate));
    return attributes;
  }

  function pathOfSection(section, dx, dy) {
    const points = [section.startPoint, ...(section.bendPoints || []), section.endPoint];
    return points.map((p, i) => `${i ? 'L' : 'M'}${(p.x + dx).toFixed(1)} ${(p.y + dy).toFixed(1)}`)
        .join(' ');
  }

  // A call between boxes: a cubic curve from the caller's right side to the callee's left.
  function curveBetween(from, to) {
    const x1 = from.x + NODE_WIDTH;
    const y1 = from.y + NODE_HEIGHT / 2;
    const x2 = to.x;
    const y2 = to.y + NODE_HEIGHT / 2;
    const bend = Math.max(60, Math.abs(x2 - x1) / 2);
    return `M${x1.toFixed(1)} ${y1.toFixed(1)} C${(x1 + bend).toFixed(1)} ${y1.toFixed(1)} ` +
        `${(x2 - bend).toFixed(1)} ${y2.toFixed(1)} ${x2.toFixed(1)} ${y2.toFixed(1)}`;
  }

  function arrowMarkers() {
    const defs = svg('defs');
    for (const health of ['healthy', 'degraded', 'failing', 'idle']) {
      const marker = svg('marker', {
        id: `nm-arrow-${health}`, class: `nm-arrow nm-${health}`, viewBox: '0 0 10 10',
        refX: 9, refY: 5, markerWidth: 5, markerHeight: 5, orient: 'auto',
      });
      marker.append(svg('path', {d: 'M0 0 L10 5 L0 10 z'}));
      defs.append(marker);
    }
    return defs;
  }

  function boxLabel(box) {
    if (box.kind === 'outside') return 'outside the cluster';
    return box.id;
  }

  function drawNode(node, position, state) {
    const {row} = node;
    const hasResponses = number(row.requests) > 0;
    const successRate = number(row.successRate);
    const rps = number(row.rps);
    const health = hasResponses ? healthOf(row.requests, successRate) : 'idle';
    const external = isExternal(node.resource);
    const group = svg('g', {
      class: `nm-node nm-${health}${external ? ' nm-external' : ''}` +
          (state.sel === node.id ? ' nm-selected' : ''),
      transform: `translate(${position.x.toFixed(1)},${position.y.toFixed(1)})`,
      'data-workload': node.id,
      'data-rps': String(rps),
    });
    if (hasResponses) group.dataset.successRate = String(successRate);
    if (!external) group.setAttribute('tabindex', '0');
    const title = svg('title');
    const figures = hasResponses ? `success ${percent(successRate)}, ${perSecond(rps)}` :
                                   'no responses in the window';
    title.textContent = `${node.id}\n${figures}`;
    group.append(title, svg('rect', {width: NODE_WIDTH, height: NODE_HEIGHT, rx: 5}));
    // TYPE/NAME: the box says the namespace.
    const name = external ? node.resource.name : node.id.slice(node.id.indexOf('/') + 1);
    group.append(svgText(8, 15, shortened(name, NAME_CHARS), 'nm-name'));
    group.append(svgText(8, 29, hasResponses ? `${percent(successRate)} · ${perSecond(rps)}` :
                                               'no responses', 'nm-figures'));
    return group;
  }

  // Highlights an element's neighbourhood while the pointer is over it.
  function highlighter(root, nodeElements, edgeElements) {
    let lit = [];
    const clear = () => {
      for (const element of lit) element.classList.remove('nm-lit');
      lit = [];
      root.classList.remove('nm-focus');
    };
    const light = (elements) => {
      clear();
      lit = elements.filter(Boolean);
      for (const element of lit) element.classList.add('nm-lit');
      root.classList.add('nm-focus');
    };
    const litOfNode = (node) => [nodeElements.get(node.id),
      ...node.edges.flatMap((e) => [edgeElements.get(e.id), nodeElements.get(e.source.id),
        nodeElements.get(e.target.id)])];
    const litOfEdge = (item) => [edgeElements.get(item.id), nodeElements.get(item.source.id),
      nodeElements.get(item.target.id)];
    return {clear, light, litOfNode, litOfEdge};
  }

  // Pan by dragging the background, zoom with the wheel around the pointer: the viewBox moves.
  function panAndZoom(root, initial, onChange) {
    let view = Object.assign({}, initial);
    const apply = () => {
      root.setAttribute('viewBox', `${view.x} ${view.y} ${view.width} ${view.height}`);
      onChange(view);
    };
    const toUser = (clientX, clientY) => {
      const matrix = root.getScreenCTM();
      return matrix ? new DOMPoint(clientX, clientY).matrixTransform(matrix.inverse()) :
                      new DOMPoint(view.x, view.y);
    };
    const zoom = (factor, at) => {
      const width = Math.min(Math.max(view.width * factor, 50), initial.fit.width * 20);
      const applied = width / view.width;
      view = {x: at.x - (at.x - view.x) * applied, y: at.y - (at.y - view.y) * applied,
        width, height: view.height * applied, fit: initial.fit};
      apply();
    };
    root.addEventListener('wheel', (event) => {
      event.preventDefault();
      zoom(Math.exp(event.deltaY * 0.0015), toUser(event.clientX, event.clientY));
    }, {passive: false});
    let drag = null;
    root.addEventListener('pointerdown', (event) => {
      if (event.button !== 0 || event.target.closest('[data-workload],[data-edge]')) return;
      const matrix = root.getScreenCTM();
      if (!matrix) return;
      // User units per screen pixel: panning does not change it.
      drag = {x: event.clientX, y: event.clientY, scale: 1 / matrix.a, view};
      root.setPointerCapture(event.pointerId);
      root.classList.add('nm-dragging');
    });
    root.addEventListener('pointermove', (event) => {
      if (!drag) return;
      view = Object.assign({}, drag.view, {
        x: drag.view.x - (event.clientX - drag.x) * drag.scale,
        y: drag.view.y - (event.clientY - drag.y) * drag.scale,
      });
      apply();
    });
    const stop = () => {
      drag = null;
      root.classList.remove('nm-dragging');
    };
    root.addEventListener('pointerup', stop);
    root.addEventListener('pointercancel', stop);
    const center = () => new DOMPoint(view.x + view.width / 2, view.y + view.height / 2);
    return {
      zoomIn: () => zoom(1 / 1.4, center()),
      zoomOut: () => zoom(1.4, center()),
      fit: () => {
        view = Object.assign({}, initial.fit, {fit: initial.fit});
        apply();
      },
    };
  }

  // The view of a graph smaller than its drawing area: at its natural size (one unit a
  // pixel), centred at the top, rather than blown up to fill it.
  function naturalSize(root, fit) {
    const area = root.getBoundingClientRect();
    if (area.width <= fit.width || area.height <= fit.height) return fit;
    return {x: fit.x - (area.width - fit.width) / 2, y: fit.y, width: area.width,
      height: area.height};
  }

  // The SVG of a laid out model; returns it with its elements by id.
  function drawGraph(model, layout, state) {
    const width = Math.max(layout.top.width || 0, 1);
    const height = Math.max(layout.top.height || 0, 1);
    const root = svg('svg', {class: 'nm-graph', role: 'img',
      'aria-label': `call graph of ${model.nodes.size} workloads and ${model.edges.length} calls`});
    root.append(arrowMarkers());
    const boxLayer = svg('g', {class: 'nm-boxes'});
    const innerLayer = svg('g', {class: 'nm-edges'});
    const crossLayer = svg('g', {class: 'nm-edges nm-crossing'});
    const nodeLayer = svg('g', {class: 'nm-nodes'});
    const boxPlace = new Map(layout.top.children.map((c) => [c.id, c]));
    const nodePlace = new Map();
    const nodeElements = new Map();
    const edgeElements = new Map();
    for (const boxLayout of layout.boxes) {
      const place = boxPlace.get(boxLayout.id);
      const box = model.boxes.get(boxLayout.id);
      const group = svg('g', {class: `nm-box nm-box-${box.kind}`});
      if (box.kind === 'outside') group.dataset.outside = '';
      else group.dataset.namespace = box.id;
      group.append(svg('rect', {x: place.x, y: place.y, width: boxLayout.width,
        height: boxLayout.height, rx: 8}));
      group.append(svgText(place.x + 12, place.y + 18, boxLabel(box), 'nm-box-label'));
      boxLayer.append(group);
      for (const child of boxLayout.children || []) {
        const position = {x: place.x + child.x, y: place.y + child.y};
        nodePlace.set(child.id, position);
        const element = drawNode(model.nodes.get(child.id), position, state);
        nodeElements.set(child.id, element);
        nodeLayer.append(element);
      }
      const byId = new Map(box.edges.map((e) => [e.id, e]));
      for (const edgeLayout of boxLayout.edges || []) {
        const d = (edgeLayout.sections || []).map((s) => pathOfSection(s, place.x, place.y))
            .join(' ');
        const element = svg('path', edgeAttributes(byId.get(edgeLayout.id), d));
        edgeElements.set(edgeLayout.id, element);
        innerLayer.append(element);
      }
    }
    for (const item of model.crossing) {
      const element = svg('path', edgeAttributes(item,
          curveBetween(nodePlace.get(item.source.id), nodePlace.get(item.target.id))));
      edgeElements.set(item.id, element);
      crossLayer.append(element);
    }
    for (const [id, element] of edgeElements) {
      if (id === state.edge) element.classList.add('nm-selected');
    }
    root.append(boxLayer, innerLayer, crossLayer, nodeLayer);
    root.dataset.nodes = String(nodeElements.size);
    root.dataset.edges = String(edgeElements.size);
    const margin = 20;
    const fit = {x: -margin, y: -margin, width: width + 2 * margin, height: height + 2 * margin};
    return {root, fit, nodeElements, edgeElements};
  }

  // ---- Panels ----

  function toggle(label, checked, onChange, extra) {
    const input = html('input', {type: 'checkbox'});
    input.checked = checked;
    input.addEventListener('change', () => onChange(input.checked));
    return html('label', {class: 'nm-toggle', 'data-filter': extra}, input, ` ${label}`);
  }

  function hideNamespacesChooser(size, state) {
    const counts = Object.entries(size.nodesByNamespace || {});
    counts.sort((a, b) => a[0].localeCompare(b[0]));
    const hidden = state.hide || [];
    const list = html('div', {class: 'nm-hide-list'});
    for (const [name, count] of counts) {
      list.append(toggle(`${name} (${count} workloads)`, hidden.includes(name), (checked) => {
        nm.state.navigate({hide: checked ? [...hidden, name] : withoutArray(hidden, name)});
      }, `hide:${name}`));
    }
    if (!counts.length) list.append(html('p', {}, 'no namespaces to hide'));
    const shown = hidden.filter((h) => h !== HIDE_EXTERNAL).length;
    return html('details', {class: 'nm-hide'},
        html('summary', {}, shown ? `Hidden namespaces: ${shown}` : 'Hide namespaces'), list);
  }

  function aroundChooser(model, state) {
    const input = html('input', {type: 'text', list: 'nm-around-choices', size: 28,
      placeholder: `${(state.ns || [])[0] || 'namespace'}/${state.type || 'deploy'}/name`,
      'aria-label': 'workload whose neighbours to show'});
    input.value = state.around || '';
    const choices = html('datalist', {id: 'nm-around-choices'});
    if (model) {
      for (const id of model.nodes.keys()) choices.append(html('option', {value: id}));
    }
    const error = html('span', {class: 'nm-input-error', role: 'alert'});
    const apply = () => {
      const value = input.value.trim();
      if (value && !nm.state.parseRef(value)) {
        error.textContent = `"${value}" is no workload: write it as namespace/type/name, e.g. ` +
            `${(state.ns || [])[0] || 'default'}/deploy/web`;
        return;
      }
      nm.state.navigate({around: value || null});
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') apply();
    });
    const show = html('button', {type: 'button'}, 'Show');
    show.addEventListener('click', apply);
    const parts = [html('label', {}, 'Neighbours of ', input), choices, show];
    if (state.around) {
      const clear = html('button', {type: 'button'}, 'All');
      clear.addEventListener('click', () => nm.state.navigate({around: null}));
      parts.push(clear);
    }
    parts.push(error);
    return html('span', {class: 'nm-around', 'data-filter': 'around'}, ...parts);
  }

  function toolbar(view, model, state) {
    const size = view.size || {};
    const hidden = state.hide || [];
    const bar = html('div', {class: 'nm-graph-toolbar', role: 'toolbar'});
    bar.append(
        toggle(`Only failing calls (${number(size.failingEdges)})`, !!state.failing,
            (checked) => nm.state.navigate({failing: checked}), 'failing'),
        aroundChooser(model, state), hideNamespacesChooser(size, state),
        toggle('Hide outside the cluster', hidden.includes(HIDE_EXTERNAL), (checked) => {
          nm.state.navigate({hide: checked ? [...hidden, HIDE_EXTERNAL] :
                                             withoutArray(hidden, HIDE_EXTERNAL)});
        }, 'external'),
        toggle('Draw anyway', !!state.all, (checked) => nm.state.navigate({all: checked}), 'all'));
    const shown = html('span', {class: 'nm-graph-size'});
    shown.textContent = size.withheld ?
        `${number(size.nodes)} workloads, ${number(size.edges)} calls` :
        `${number(size.shownNodes)} of ${number(size.nodes)} workloads, ` +
            `${number(size.shownEdges)} of ${number(size.edges)} calls`;
    bar.append(shown);
    return bar;
  }

  function legend() {
    const box = html('div', {class: 'nm-legend', 'data-legend': ''});
    box.append(html('strong', {}, 'Legend'));
    const sample = (className, strokeWidth, dashed) => {
      const picture = svg('svg', {width: 36, height: 12, 'aria-hidden': 'true'});
      picture.append(svg('line', {x1: 1, y1: 6, x2: 35, y2: 6, class: className,
        'stroke-width': strokeWidth, 'stroke-dasharray': dashed ? '4 3' : null}));
      return picture;
    };
    const rows = [
      ['nm-edge nm-healthy', 2, `healthy: success ≥ ${percent(HEALTHY_FROM)}`],
      ['nm-edge nm-degraded', 2,
        `degraded: ${percent(FAILING_BELOW)} ≤ success < ${percent(HEALTHY_FROM)}`],
      ['nm-edge nm-failing', 2,
        `failing: success < ${percent(FAILING_BELOW)} (the aggregator's failing_below)`],
      ['nm-edge nm-idle', 2, 'idle: no responses in the window (dashed)'],
    ];
    const list = html('ul', {});
    for (const [className, strokeWidth, text] of rows) {
      list.append(html('li', {}, sample(className, strokeWidth, false), ` ${text}`));
    }
    box.append(list);
    const widths = html('ul', {class: 'nm-legend-widths'});
    for (const rps of [0.1, 10, 1000]) {
      widths.append(html('li', {}, sample('nm-edge nm-sample', widthOf(rps), false),
          ` ${widthOf(rps).toFixed(1)} px: ${perSecond(rps)}${rps >= 1000 ? ' and more' : ''}`));
    }
    box.append(html('p', {}, 'Width: requests per second (log scale)'), widths);
    box.append(html('p', {class: 'nm-legend-boxes'},
        'Solid boxes: the chosen namespaces; dashed: other namespaces\' workloads that call ' +
        'them or are called; "outside the cluster": peers with no pod.'));
    return box;
  }

  function figure(label, value) {
    return [html('dt', {}, label), html('dd', {}, value)];
  }

  // The selected call's figures, with a link to tap it.
  function edgePanel(model, state) {
    const item = model.edges.find((e) => e.id === state.edge);
    if (!item) return null;
    const {edge} = item;
    const panel = html('aside', {class: 'nm-edge-panel', 'data-edge-panel': item.id});
    const close = html('button', {type: 'button', class: 'nm-close', 'aria-label': 'close'}, '×');
    close.addEventListener('click', () => nm.state.navigate({edge: null}, {replace: true}));
    panel.append(close, html('h3', {}, `${item.source.id} → ${item.target.id}`));
    const requests = number(edge.requests);
    const latency = edge.latency || {};
    panel.append(html('dl', {},
        ...figure('success', requests ? percent(number(edge.successRate)) : 'no responses'),
        ...figure('requests', String(requests)),
        ...figure('rate', perSecond(number(edge.rps))),
        ...figure('p50 / p95 / p99', `${duration(latency.p50Ns)} / ${duration(latency.p95Ns)} / ` +
            `${duration(latency.p99Ns)}`),
        ...figure('open TCP connections', String(number(edge.tcpOpenConnections))),
        ...figure('caller service account', edge.sourceServiceAccount || '-'),
        ...figure('callee service account', edge.destinationServiceAccount || '-')));
    // A tap watches a workload's requests, those to another one when both are in the cluster.
    const inCluster = [item.source, item.target].filter((n) => !isExternal(n.resource));
    if (inCluster.length) {
      // Ids keep their slashes readable in the link.
      const ids = inCluster.map((n) => encodeURIComponent(n.id).replace(/%2F/g, '/'));
      const href = `#/tap?target=${ids[0]}` + (ids.length > 1 ? `&to=${ids[1]}` : '');
      panel.append(html('a', {class: 'nm-tap-link', href, 'data-tap': ''}, 'Tap these requests'));
    }
    return panel;
  }

  // Drawn instead of a graph too large to read: its size and the filters with their sizes.
  function withheldPanel(view, state) {
    const size = view.size || {};
    const nodes = number(size.nodes);
    const namespaces = Object.keys(size.nodesByNamespace || {}).length;
    const panel = html('section', {class: 'nm-withheld', 'data-withheld': ''});
    panel.append(html('h2', {}, `This graph has ${thousands(nodes)} workloads and ` +
        `${thousands(number(size.edges))} ` +
        `calls in ${namespaces} namespaces: too many to read at once.`));
    panel.append(html('p', {}, `A graph is drawn up to ${MAX_NODES} workloads and ` +
        `${thousands(MAX_EDGES)} ` +
        'calls. Narrow it down:'));
    const failing = html('button', {type: 'button', 'data-filter': 'failing'},
        `Only failing calls (${number(size.failingEdges)})`);
    failing.addEventListener('click', () => nm.state.navigate({failing: true}));
    const options = html('ul', {class: 'nm-ways-out'});
    options.append(html('li', {}, failing));
    options.append(html('li', {}, aroundChooser(null, state)));
    options.append(html('li', {}, hideNamespacesChooser(size, state)));
    const anyway = html('button', {type: 'button', 'data-filter': 'all',
      disabled: nodes > DRAW_ANYWAY_MAX_NODES ? '' : null}, 'Draw anyway');
    anyway.addEventListener('click', () => nm.state.navigate({all: true}));
    const note = nodes > DRAW_ANYWAY_MAX_NODES ?
        ` (not past ${DRAW_ANYWAY_MAX_NODES} workloads: choose a filter)` :
        nodes > DRAW_ANYWAY_WARN_NODES ? ' (laying out this many takes a few seconds)' : '';
    options.append(html('li', {}, anyway, note));
    panel.append(options);
    return panel;
  }

  const twoFrames = () =>
      new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));

  // Draws the view into the empty host element; resolves {layoutMs, renderMs} once drawn, or
  // {withheld: true} once the withheld panel is shown.
  async function render(host, view, state) {
    const size = view.size || {};
    host.classList.add('nm-graph-view');
    if (size.withheld) {
      host.append(toolbar(view, null, state), withheldPanel(view, state), legend());
      return {withheld: true};
    }
    const model = modelOf(view, state);
    host.append(toolbar(view, model, state));
    const main = html('div', {class: 'nm-graph-main'});
    const stage = html('div', {class: 'nm-graph-stage'});
    main.append(stage);
    host.append(main);
    const started = performance.now();
    const layout = await layOut(model);
    const laidOut = performance.now();
    const drawn = drawGraph(model, layout, state);
    stage.append(drawn.root);
    const fit = naturalSize(drawn.root, drawn.fit);
    const viewKey = `${(state.ns || []).join(',')}|${state.type}`;
    const initial = keptView && keptView.key === viewKey && keptView.shape === layout.key ?
        Object.assign({}, keptView.view, {fit}) :
        Object.assign({}, fit, {fit});
    const {x, y, width, height} = initial;
    drawn.root.setAttribute('viewBox', `${x} ${y} ${width} ${height}`);
    const zoom = panAndZoom(drawn.root, initial, (view) => {
      keptView = {key: viewKey, shape: layout.key, view};
    });
    const controls = html('div', {class: 'nm-zoom'});
    const buttons = [
      ['+', 'zoom in', zoom.zoomIn],
      ['−', 'zoom out', zoom.zoomOut],
      ['fit', 'fit the graph', zoom.fit],
    ];
    for (const [label, name, action] of buttons) {
      const button = html('button', {type: 'button', 'aria-label': name}, label);
      button.addEventListener('click', action);
      controls.append(button);
    }
    const lights = highlighter(drawn.root, drawn.nodeElements, drawn.edgeElements);
    drawn.root.addEventListener('pointerover', (event) => {
      const nodeElement = event.target.closest('[data-workload]');
      const edgeElement = event.target.closest('[data-edge]');
      if (nodeElement) {
        lights.light(lights.litOfNode(model.nodes.get(nodeElement.dataset.workload)));
      } else if (edgeElement) {
        lights.light(lights.litOfEdge(model.edges.find((e) => e.id === edgeElement.dataset.edge)));
      }
    });
    drawn.root.addEventListener('pointerout', (event) => {
      if (!event.relatedTarget || !drawn.root.contains(event.relatedTarget)) lights.clear();
      else if (!event.relatedTarget.closest('[data-workload],[data-edge]')) lights.clear();
    });
    drawn.root.addEventListener('click', (event) => {
      const nodeElement = event.target.closest('[data-workload]');
      if (nodeElement) {
        const node = model.nodes.get(nodeElement.dataset.workload);
        if (!isExternal(node.resource)) {
          nm.state.navigate({view: 'workload', sel: node.id, edge: null});
        }
        return;
      }
      const edgeElement = event.target.closest('[data-edge]');
      if (edgeElement) nm.state.navigate({edge: edgeElement.dataset.edge}, {replace: true});
    });
    drawn.root.addEventListener('keydown', (event) => {
      const nodeElement = event.target.closest('[data-workload]');
      if (nodeElement && event.key === 'Enter') {
        nm.state.navigate({view: 'workload', sel: nodeElement.dataset.workload, edge: null});
      }
    });
    stage.append(controls);
    if (!model.nodes.size) {
      stage.append(html('p', {class: 'nm-graph-empty'},
          'No workloads or calls in the window for these namespaces and filters.'));
    }
    const panel = edgePanel(model, state);
    if (panel) main.append(panel);
    host.append(legend());
    await twoFrames();
    const layoutMs = Math.round(laidOut - started);
    const renderMs = Math.round(performance.now() - laidOut);
    drawn.root.dataset.layoutMs = String(layoutMs);
    drawn.root.dataset.renderMs = String(renderMs);
    return {layoutMs, renderMs};
  }

  nm.graph = {render, requestParams};
})();
