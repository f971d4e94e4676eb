// The dashboard's tap.js (placeholder until the page is written).
(function () {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  nm.tap = nm.tap || {};
})();
