// The dashboard's state.js (placeholder until the page is written).
(function () {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  nm.state = nm.state || {};
})();
