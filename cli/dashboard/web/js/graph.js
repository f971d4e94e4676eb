// The dashboard's graph.js (placeholder until the page is written).
(function () {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  nm.graph = nm.graph || {};
})();
