// Sortable tables refreshed in place: each row is keyed, so a refresh updates the cells of
// the rows it already has, adds and removes only what changed and keeps the rows' elements
// (a selection, a hover, the scroll position survive the 5 s refresh).
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});

  // Creates an element with attributes and children (strings become text nodes).
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === 'string' ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  // `x` with `decimals` decimals as fmt prints it: an exact tie rounds to even (10.25 ->
  // "10.2"), where toFixed would round it up.
  function fixed(x, decimals) {
    const scaled = x * 10 ** decimals;
    const floor = Math.floor(scaled);
    if (scaled - floor === 0.5 && floor % 2 === 0) return (floor / 10 ** decimals).toFixed(decimals);
    return x.toFixed(decimals);
  }

  // Figures as meshctl shows them (cli/views/format.cc).
  const format = {
    // FormatSuccessRate: rounding hides neither the failures nor the successes.
    percent(rate) {
      const clamped = Math.min(Math.max(rate, 0), 1);
      const text = `${fixed(clamped * 100, 2)}%`;
      if (clamped < 1 && text === '100.00%') return '99.99%';
      if (clamped > 0 && text === '0.00%') return '0.01%';
      return text;
    },
    // FormatRps: one decimal, or the first two significant digits of a slower rate.
    rps(rps) {
      if (!(rps > 0)) return '0.0';
      if (rps >= 0.095) return fixed(rps, 1);
      const decimals = 1 - Math.floor(Math.log10(rps));
      return fixed(rps, decimals).replace(/0+$/, '').replace(/\.$/, '');
    },
    // FormatLatency: milliseconds with three decimals below a second, else seconds.
    latency(ns) {
      const nanoseconds = Math.max(Number(ns || 0), 0);
      const pad = (n) => String(n).padStart(3, '0');
      const microseconds = Math.floor((nanoseconds + 500) / 1000);
      if (microseconds < 1e6) return `${Math.floor(microseconds / 1000)}.${pad(microseconds % 1000)}ms`;
      const milliseconds = Math.floor((nanoseconds + 500000) / 1e6);
      return `${Math.floor(milliseconds / 1000)}.${pad(milliseconds % 1000)}s`;
    },
    count: (value) => String(Number(value || 0)),
  };

  // columns: [{key, label, numeric, value(row) (for sorting), text(row) (shown; default the
  //   value), cell(row, td) (fills the cell itself instead)}]
  // options: {key(row) -> string, attributes(row) -> {name: value}, sort ("-rps" or "name"),
  //   onSort(sort), onRow(row) (a click on the row), caption, empty (text without rows)}
  class Table {
    constructor(host, columns, options) {
      this.columns = columns;
      this.options = options;
      this.rows = new Map(); // key -> {tr, cells}
      this.sort = options.sort || null;
      this.head = el('thead');
      this.body = el('tbody');
      this.emptyRow = el('tr', {class: 'empty'}, el('td', {colspan: String(columns.length)}));
      this.table = el('table', {class: 'data'}, this.head, this.body);
      if (options.caption) this.table.prepend(el('caption', {}, options.caption));
      this.headers = columns.map((column) => {
        const button = el('button', {type: 'button'}, column.label);
        button.addEventListener('click', () => this.sortBy(column.key));
        return el('th', {class: column.numeric ? 'num' : null, 'data-column': column.key}, button);
      });
      this.head.append(el('tr', {}, ...this.headers));
      host.append(this.table);
    }

    sortBy(key) {
      // Largest first on the first click, then the other way.
      const sort = this.sort === `-${key}` ? key : `-${key}`;
      this.sort = sort;
      if (this.options.onSort) this.options.onSort(sort);
      this.update(this.last || []);
    }

    // Shows `rows` (in the order of the current sort), reusing the rows already shown.
    update(rows) {
      this.last = rows;
      const seen = new Set();
      const ordered = this.sorted(rows);
      for (const [i, row] of ordered.entries()) {
        const key = this.options.key(row);
        seen.add(key);
        let entry = this.rows.get(key);
        if (!entry) {
          entry = this.createRow(row);
          this.rows.set(key, entry);
        }
        entry.row = row;
        this.fill(entry);
        // Moved only when out of place: a focused or hovered row stays as it is.
        const here = this.body.children[i] || null;
        if (here !== entry.tr) this.body.insertBefore(entry.tr, here);
      }
      for (const [key, entry] of this.rows) {
        if (!seen.has(key)) {
          entry.tr.remove();
          this.rows.delete(key);
        }
      }
      this.emptyRow.firstChild.textContent = this.options.empty || 'Nothing in this window.';
      if (rows.length === 0) this.body.append(this.emptyRow);
      else this.emptyRow.remove();
      for (const [i, column] of this.columns.entries()) {
        const order =
          this.sort === column.key ? 'ascending' : this.sort === `-${column.key}` ? 'descending' : null;
        if (order) this.headers[i].setAttribute('aria-sort', order);
        else this.headers[i].removeAttribute('aria-sort');
      }
    }

    sorted(rows) {
      if (!this.sort) return rows;
      const descending = this.sort.startsWith('-');
      const key = descending ? this.sort.slice(1) : this.sort;
      const column = this.columns.find((c) => c.key === key);
      if (!column) return rows;
      const value = (row) => column.value(row);
      return [...rows].sort((a, b) => {
        const x = value(a);
        const y = value(b);
        const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
        return descending ? -order : order;
      });
    }

    createRow(row) {
      const cells = this.columns.map((column) => el('td', {class: column.numeric ? 'num' : null}));
      const tr = el('tr', {}, ...cells);
      const entry = {tr, cells, row};
      if (this.options.onRow) {
        tr.classList.add('clickable');
        tr.tabIndex = 0;
        tr.addEventListener('click', () => this.options.onRow(entry.row));
        tr.addEventListener('keydown', (event) => {
          if (event.key === 'Enter') this.options.onRow(entry.row);
        });
      }
      return entry;
    }

    fill(entry) {
      const attributes = this.options.attributes ? this.options.attributes(entry.row) : {};
      for (const [name, value] of Object.entries(attributes)) {
        if (value === null || value === undefined) entry.tr.removeAttribute(name);
        else if (entry.tr.getAttribute(name) !== String(value)) entry.tr.setAttribute(name, value);
      }
      this.columns.forEach((column, i) => {
        const td = entry.cells[i];
        if (column.cell) {
          column.cell(entry.row, td);
          return;
        }
        const text = column.text ? column.text(entry.row) : String(column.value(entry.row));
        if (td.textContent !== text) td.textContent = text;
      });
    }
  }

  nm.table = {el, format, Table};
})();
