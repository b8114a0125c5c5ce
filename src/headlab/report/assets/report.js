/* headlab head atlas report. Reads the JSON payload of the "headlab-data" script block and builds the
 * page. All text coming from data (token text, names, command lines) is set with textContent or
 * drawn on a canvas, never parsed as HTML. No network access. */
(function () {
  'use strict';
  var T0 = performance.now();
  var D = JSON.parse(document.getElementById('headlab-data').textContent);
  var META = D.meta || {};
  var NL = META.n_layers, NH = META.n_heads;
  var METRICS = D.metrics || [];
  var ROLE_COLORS = { 'sink': '#6b4fa0', 'previous-token': '#2a9d8f', 'induction': '#e76f51', 'retrieval': '#d62c6d',
    'local': '#3a86c8', 'broad': '#8d99ae' };
  // role letters and the role each metric's grid marks with a dot: from the payload (the probe classes)
  var ROLES = D.roles || {};
  var ROLE_ABBR = ROLES.letters || {};
  var METRIC_ROLE = ROLES.metric_role || {};

  // ---- small DOM helpers (text only through textContent) ----
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function fmt(v) {
    if (v === null || v === undefined || (typeof v === 'number' && !isFinite(v))) return '–';
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
    return v.toFixed(a >= 100 ? 1 : a >= 10 ? 2 : 3);
  }
  function fmtSigned(v) { return (v > 0 ? '+' : '') + fmt(v); }
  function vis(s) { // visible whitespace for token labels
    return String(s).replace(/\n/g, '\u23ce').replace(/\t/g, '\u21e5').replace(/^ /, '\u2423').replace(/ $/, '\u2423') || '\u2205';
  }
  function trunc(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + '\u2026' : s; }
  function site(l, h) { return 'L' + l + 'H' + h; }

  // ---- colour scales ----
  var VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
    [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]];
  var BLUES = [[255, 255, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214], [66, 146, 198],
    [33, 113, 181], [8, 81, 156], [8, 48, 107], [4, 22, 60]];
  var DIVERGE = [[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247], [253, 219, 199], [239, 138, 98], [178, 24, 43]];
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t));
    var x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    var a = stops[i], b = stops[i + 1];
    return [Math.round(a[0] + f * (b[0] - a[0])), Math.round(a[1] + f * (b[1] - a[1])), Math.round(a[2] + f * (b[2] - a[2]))];
  }
  function css(c) { return 'rgb(' + c[0] + ',' + c[1] + ',' + c[2] + ')'; }
  function legend(stops, lo, hi, label) {
    var box = el('div', 'legend');
    var c = document.createElement('canvas'); c.width = 90; c.height = 1; c.style.width = '90px';
    var g = c.getContext('2d'), im = g.createImageData(90, 1);
    for (var i = 0; i < 90; i++) { var col = ramp(stops, i / 89); im.data.set([col[0], col[1], col[2], 255], 4 * i); }
    g.putImageData(im, 0, 0);
    box.appendChild(el('span', null, lo)); box.appendChild(c); box.appendChild(el('span', null, hi));
    if (label) box.appendChild(el('span', null, label));
    return box;
  }

  // ---- data access ----
  function index(records) {
    var m = {};
    (records || []).forEach(function (r) { m[site(r.layer, r.head)] = r; });
    return m;
  }
  var HEADS = index(D.heads), BASE = D.baseline ? index(D.baseline) : null;
  function value(src, l, h, metric) {
    var r = src && src[site(l, h)];
    var v = r ? r[metric] : null;
    return (typeof v === 'number' && isFinite(v)) ? v : null;
  }
  function range(metric, sources) {
    var lo = Infinity, hi = -Infinity;
    sources.forEach(function (src) {
      if (!src) return;
      for (var k in src) { var v = src[k][metric]; if (typeof v === 'number' && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    });
    if (lo === Infinity) { lo = 0; hi = 1; }
    if (hi === lo) { hi = lo + 1e-9; }
    return [lo, hi];
  }

  // ---- state ----
  var S = { layer: 0, head: 0, text: 0, query: null, scale: 'log', cmpMetric: METRICS[0] };

  // ---- tooltip ----
  var tip = document.getElementById('tip');
  function showTip(ev, build) {
    clear(tip); build(tip); tip.style.display = 'block';
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 8) x = ev.clientX - w - 14;
    if (y + h > window.innerHeight - 8) y = ev.clientY - h - 14;
    tip.style.left = x + 'px'; tip.style.top = y + 'px';
  }
  function hideTip() { tip.style.display = 'none'; }
  function headTip(t, l, h, metric, mode) {
    var r = HEADS[site(l, h)] || {};
    t.appendChild(el('b', null, site(l, h)));
    t.appendChild(document.createTextNode('  layer ' + l + ', head ' + h + (META.n_kv_heads ? ', kv ' + Math.floor(h / (NH / META.n_kv_heads)) : '')));
    METRICS.forEach(function (m) {
      var v = value(HEADS, l, h, m), line = el('div', m === metric ? '' : 'r');
      var s = m + ': ' + fmt(v);
      if (BASE) { var b = value(BASE, l, h, m); s += '   (baseline ' + fmt(b) + (v !== null && b !== null ? ', \u0394 ' + fmtSigned(v - b) : '') + ')'; }
      line.textContent = s; if (m === metric) line.style.fontWeight = '600';
      t.appendChild(line);
    });
    t.appendChild(el('div', 'r', 'roles: ' + ((r.roles && r.roles.length) ? r.roles.join(', ') : 'none')));
  }

  // ---- grids ----
  var cellW = Math.max(6, Math.min(14, Math.floor(180 / NH))), cellH = Math.max(4, Math.min(12, Math.floor(380 / NL)));
  var allCells = [];
  function gridFrame(title, hint, metricName) {
    var card = el('div', 'gcard');
    if (metricName) card.setAttribute('data-metric', metricName);
    var h3 = el('h3', null, title);
    if (hint) { var sp = el('span', 'hint', hint); h3.appendChild(sp); }
    card.appendChild(h3);
    var wrap = el('div', 'gwrap');
    var ylab = el('div', 'ylab');
    ylab.style.gridTemplateRows = 'repeat(' + NL + ', ' + cellH + 'px)'; ylab.style.rowGap = '1px'; ylab.style.paddingTop = '1px';
    var every = Math.max(1, Math.ceil(10 / (cellH + 1)));
    for (var l = 0; l < NL; l++) ylab.appendChild(el('span', null, (l % every === 0 && cellH >= 5) || l % 5 === 0 ? String(l) : ''));
    var grid = el('div', 'grid');
    grid.style.gridTemplateColumns = 'repeat(' + NH + ', ' + cellW + 'px)';
    grid.style.gridTemplateRows = 'repeat(' + NL + ', ' + cellH + 'px)';
    var xlab = el('div', 'xlab');
    xlab.style.gridTemplateColumns = 'repeat(' + NH + ', ' + cellW + 'px)'; xlab.style.columnGap = '1px'; xlab.style.paddingLeft = '1px';
    var xevery = Math.max(1, Math.ceil(14 / (cellW + 1)));
    for (var hh = 0; hh < NH; hh++) xlab.appendChild(el('span', null, hh % xevery === 0 ? String(hh) : ''));
    wrap.appendChild(ylab); wrap.appendChild(grid); wrap.appendChild(el('div')); wrap.appendChild(xlab);
    card.appendChild(wrap);
    return { card: card, grid: grid };
  }
  function addCell(grid, l, h, color, metric, mode) {
    var c = el('div', 'cell');
    c.setAttribute('data-layer', l); c.setAttribute('data-head', h);
    if (color) c.style.background = color; else c.classList.add('null');
    c.addEventListener('mousemove', function (ev) { showTip(ev, function (t) { headTip(t, l, h, metric, mode); }); });
    c.addEventListener('mouseleave', hideTip);
    c.addEventListener('click', function () { select(l, h, true); });
    grid.appendChild(c); allCells.push(c);
    return c;
  }
  function metricGrid(metric, src, title, hint, lohi, diff) {
    var f = gridFrame(title, hint, metric);
    var role = METRIC_ROLE[metric];
    for (var l = 0; l < NL; l++) for (var h = 0; h < NH; h++) {
      var v;
      if (diff) { var a = value(HEADS, l, h, metric), b = value(BASE, l, h, metric); v = (a === null || b === null) ? null : a - b; }
      else v = value(src, l, h, metric);
      var color = null;
      if (v !== null) {
        color = diff ? css(ramp(DIVERGE, 0.5 + 0.5 * v / lohi[1])) : css(ramp(VIRIDIS, (v - lohi[0]) / (lohi[1] - lohi[0])));
      }
      var c = addCell(f.grid, l, h, color, metric);
      var r = src && src[site(l, h)];
      if (!diff && role && r && r.roles && r.roles.indexOf(role) >= 0) c.classList.add('mark');
    }
    f.card.appendChild(diff ? legend(DIVERGE, fmt(-lohi[1]), fmt(lohi[1]), '\u0394') : legend(VIRIDIS, fmt(lohi[0]), fmt(lohi[1])));
    return f.card;
  }
  function rolesGrid() {
    var f = gridFrame('roles', 'letters = roles', null);
    f.card.classList.add('roles');
    f.grid.parentNode.classList.add('roles-grid');
    var used = {};
    for (var l = 0; l < NL; l++) for (var h = 0; h < NH; h++) {
      var r = HEADS[site(l, h)] || { roles: [] };
      var roles = r.roles || [];
      var color = roles.length ? (ROLE_COLORS[roles[0]] || '#555') : '#f4f5f7';
      var c = addCell(f.grid, l, h, color, null);
      c.textContent = cellW >= 8 && cellH >= 8 ? roles.map(function (x) { return ROLE_ABBR[x] || '?'; }).join('').slice(0, 2) : '';
      roles.forEach(function (x) { used[x] = 1; });
    }
    var key = el('div', 'role-key');
    Object.keys(ROLE_COLORS).concat(Object.keys(used).filter(function (x) { return !(x in ROLE_COLORS); })).forEach(function (x) {
      var s = el('span'); var sw = el('i'); sw.style.background = ROLE_COLORS[x] || '#555';
      s.appendChild(sw); s.appendChild(document.createTextNode((ROLE_ABBR[x] || '?') + ' ' + x)); key.appendChild(s);
    });
    f.card.appendChild(key);
    return f.card;
  }
  function buildAtlas() {
    var box = clear(document.getElementById('atlas-grids'));
    var formulas = META.formulas || {};
    METRICS.forEach(function (m) {
      var card = metricGrid(m, HEADS, m, '', range(m, [HEADS]), false);
      if (formulas[m]) card.title = m + ' = ' + formulas[m];
      box.appendChild(card);
    });
    box.appendChild(rolesGrid());
    var sub = document.getElementById('atlas-sub');
    sub.textContent = NL + ' layers \u00d7 ' + NH + ' query heads' + (META.n_kv_heads ? ' (' + META.n_kv_heads + ' KV heads)' : '') +
      '. Rows are layers (0 at the top), columns are heads. Colour: value of the metric (scale under each grid); ' +
      'a dot marks heads holding the role that metric measures; striped = not measured. Hover for numbers, click to inspect a head.';
  }

  // ---- comparison ----
  function buildCompare() {
    var sec = document.getElementById('compare');
    if (!BASE) {
      document.getElementById('compare-body').appendChild(el('p', 'note',
        'No comparison: this scan was run without an edit or pattern. Run headlab scan with an edit or a pattern to compare the grid before and after.'));
      return;
    }
    var bar = document.getElementById('compare-bar'), body = document.getElementById('compare-body');
    var edits = (META.edits || []).join('; '), pat = META.pattern;
    document.getElementById('compare-sub').textContent = 'Baseline = the same scan without ' +
      [edits ? 'the edit (' + edits + ')' : '', pat ? 'the pattern (' + pat + ')' : ''].filter(Boolean).join(' and ') +
      '. Before and after share one colour scale; the diff is after \u2212 before.';
    METRICS.forEach(function (m) {
      var b = el('button', 'seg', m); b.setAttribute('data-metric', m);
      b.addEventListener('click', function () { S.cmpMetric = m; drawCompare(); });
      bar.appendChild(b);
    });
    function drawCompare() {
      var m = S.cmpMetric;
      Array.prototype.forEach.call(bar.querySelectorAll('button'), function (b) { b.classList.toggle('on', b.getAttribute('data-metric') === m); });
      clear(body);
      var row = el('div', 'grids');
      var lohi = range(m, [HEADS, BASE]);
      var dmax = 0;
      for (var l = 0; l < NL; l++) for (var h = 0; h < NH; h++) {
        var a = value(HEADS, l, h, m), b = value(BASE, l, h, m);
        if (a !== null && b !== null) dmax = Math.max(dmax, Math.abs(a - b));
      }
      row.appendChild(metricGrid(m, BASE, 'before', 'baseline', lohi, false));
      row.appendChild(metricGrid(m, HEADS, 'after', 'with edit/pattern', lohi, false));
      row.appendChild(metricGrid(m, HEADS, 'diff', 'after \u2212 before', [-(dmax || 1e-9), dmax || 1e-9], true));
      var ch = el('div', 'gcard'); ch.appendChild(el('h3', null, 'largest changes'));
      var list = [];
      for (l = 0; l < NL; l++) for (h = 0; h < NH; h++) {
        var a2 = value(HEADS, l, h, m), b2 = value(BASE, l, h, m);
        if (a2 !== null && b2 !== null && a2 !== b2) list.push([Math.abs(a2 - b2), l, h, b2, a2]);
      }
      list.sort(function (x, y) { return y[0] - x[0]; });
      var ol = el('ol', 'changes');
      list.slice(0, 12).forEach(function (x) {
        var li = el('li', null, site(x[1], x[2]) + ': ' + fmt(x[3]) + ' \u2192 ' + fmt(x[4]) + ' (' + fmtSigned(x[4] - x[3]) + ')');
        li.addEventListener('click', function () { select(x[1], x[2], true); });
        ol.appendChild(li);
      });
      if (!list.length) ol.appendChild(el('li', 'note', 'no head changed'));
      ch.appendChild(ol); row.appendChild(ch);
      body.appendChild(row);
      markSelected();
    }
    drawCompare();
  }

  // ---- head maps ----
  var TEXTS = (D.maps && D.maps.texts) || [];
  var decoded = {};
  function b64bytes(s) {
    if (typeof s !== 'string') return s; // already inflated (gzip pages)
    var bin = atob(s), n = bin.length, out = new Uint8Array(n); for (var i = 0; i < n; i++) out[i] = bin.charCodeAt(i); return out;
  }
  // gzip pages: every blob is inflated once at start with the browser's DecompressionStream
  var ENC = (D.maps && D.maps.encoding) || 'raw';
  var mapsState = ENC === 'gzip' ? 'pending' : 'ready';
  var BLOBS = ['map', 'topk_pos', 'topk_w'];
  function inflate(s) {
    var stream = new Blob([b64bytes(s)]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function inflateAll() {
    if (typeof DecompressionStream === 'undefined') return Promise.reject(new Error('no DecompressionStream'));
    var jobs = [];
    TEXTS.forEach(function (t) {
      Object.keys(t.heads).forEach(function (k) {
        var m = t.heads[k];
        BLOBS.forEach(function (f) { if (typeof m[f] === 'string') jobs.push(inflate(m[f]).then(function (u) { m[f] = u; })); });
      });
    });
    return Promise.all(jobs);
  }
  function getMap(ti, l, h) {
    if (mapsState !== 'ready') return null;
    var t = TEXTS[ti]; if (!t) return null;
    var m = t.heads[site(l, h)]; if (!m) return null;
    var key = ti + ':' + site(l, h);
    if (!decoded[key]) {
      var d = { kind: m.kind, rows: m.rows, cols: m.cols, q: b64bytes(m.map), k: m.k || 0, n: t.n_tokens };
      if (m.topk_pos) {
        var pb = b64bytes(m.topk_pos), wb = b64bytes(m.topk_w);
        var pv = new DataView(pb.buffer), wv = new DataView(wb.buffer), cnt = t.n_tokens * d.k;
        d.pos = new Int32Array(cnt); d.w = new Float32Array(cnt);
        var miss = m.pos_bytes === 2 ? 0xFFFF : 0xFFFFFFFF;
        for (var i = 0; i < cnt; i++) {
          var p = m.pos_bytes === 2 ? pv.getUint16(2 * i, true) : pv.getUint32(4 * i, true);
          d.pos[i] = p === miss ? -1 : p; d.w[i] = wv.getUint16(2 * i, true) / 65535;
        }
      }
      decoded[key] = d;
    }
    return decoded[key];
  }
  var FLOOR = D.maps ? D.maps.log_floor : -5;
  function qval(q) { return q ? Math.pow(10, (q - 1) * -FLOOR / 254 + FLOOR) : 0; }
  function binRange(bin, bins, n) { // positions i with floor(i*bins/n) == bin
    var lo = Math.ceil(bin * n / bins), hi = Math.ceil((bin + 1) * n / bins) - 1;
    return [lo, Math.min(n - 1, hi)];
  }
  var MAP_PX = 512, AX = 120;

  function drawMap() {
    var box = clear(document.getElementById('map-box'));
    var meta = clear(document.getElementById('map-meta'));
    var t = TEXTS[S.text], d = t ? getMap(S.text, S.layer, S.head) : null;
    if (mapsState !== 'ready') {
      box.appendChild(el('p', 'note', mapsState === 'pending' ? 'Decompressing the attention maps\u2026'
        : 'This browser cannot decompress the maps (they need DecompressionStream: Chrome 80+, Firefox 113+, Safari 16.4+).'));
      drawQuery(null);
      return;
    }
    if (!d) {
      box.appendChild(el('p', 'note', !TEXTS.length ? (D.maps_note || 'This report has no attention maps.')
        : 'No map was recorded for ' + site(S.layer, S.head) + ' on this text. Re-run headlab report with --maps ' + site(S.layer, S.head) + ' to add it.'));
      drawQuery(null);
      return;
    }
    var n = t.n_tokens, R = d.rows, C = d.cols;
    var scale = Math.max(1, Math.floor(MAP_PX / Math.max(R, C)));
    var W = C * scale, H = R * scale;
    var lut = [], vmax = 0, i;
    for (i = 0; i < d.q.length; i++) if (d.q[i] > vmax) vmax = d.q[i];
    var vmaxv = qval(vmax) || 1;
    // log scale: the 3 decades below the map's largest value (codes: 254 per -FLOOR decades)
    var qlo = Math.max(1, vmax - Math.round(3 * 254 / -FLOOR));
    for (i = 0; i < 256; i++) lut.push(ramp(BLUES, S.scale === 'log' ? (i < qlo ? 0 : 0.08 + 0.92 * (i - qlo) / Math.max(1, vmax - qlo)) : qval(i) / vmaxv));
    var src = document.createElement('canvas'); src.width = C; src.height = R;
    var g = src.getContext('2d'), im = g.createImageData(C, R);
    for (i = 0; i < R * C; i++) { var col = lut[d.q[i]]; im.data[4 * i] = col[0]; im.data[4 * i + 1] = col[1]; im.data[4 * i + 2] = col[2]; im.data[4 * i + 3] = 255; }
    g.putImageData(im, 0, 0);
    var cv = document.createElement('canvas'); cv.className = 'map'; cv.id = 'map-canvas';
    cv.width = W; cv.height = H; cv.style.width = W + 'px'; cv.style.height = H + 'px';
    var cg = cv.getContext('2d'); cg.imageSmoothingEnabled = false; cg.drawImage(src, 0, 0, W, H);
    // overlay: selected query row and its top keys
    var qi = S.query === null ? n - 1 : S.query;
    var rb = Math.floor(qi * R / n);
    cg.strokeStyle = 'rgba(232,65,44,0.9)'; cg.lineWidth = 1;
    cg.strokeRect(0.5, rb * scale + 0.5, W - 1, Math.max(1, scale) - 0);
    if (d.pos) {
      cg.fillStyle = 'rgba(232,65,44,0.95)';
      for (var k = 0; k < d.k; k++) {
        var p = d.pos[qi * d.k + k]; if (p < 0 || d.w[qi * d.k + k] <= 0) continue;
        var cx = (Math.floor(p * C / n) + 0.5) * scale;
        cg.beginPath(); cg.arc(cx, (rb + 0.5) * scale, Math.max(2.5, scale / 3), 0, 2 * Math.PI); cg.fill();
      }
    }
    cv.addEventListener('mousemove', function (ev) {
      var rc = cv.getBoundingClientRect();
      var c = Math.min(C - 1, Math.floor((ev.clientX - rc.left) / scale)), r = Math.min(R - 1, Math.floor((ev.clientY - rc.top) / scale));
      var qr = binRange(r, R, n), kr = binRange(c, C, n);
      showTip(ev, function (tt) {
        var exact = R === n && C === n;
        tt.appendChild(el('b', null, exact ? 'query ' + qr[0] + ' \u2192 key ' + kr[0] : 'queries ' + qr[0] + '\u2013' + qr[1] + ' \u2192 keys ' + kr[0] + '\u2013' + kr[1]));
        tt.appendChild(el('div', null, (exact ? 'weight' : 'mean weight') + ' \u2248 ' + fmt(qval(d.q[r * C + c]))));
        tt.appendChild(el('div', 'r', 'query: ' + trunc(vis(t.tokens[qr[0]]), 30) + (qr[1] > qr[0] ? ' \u2026 ' + trunc(vis(t.tokens[qr[1]]), 30) : '')));
        tt.appendChild(el('div', 'r', 'key: ' + trunc(vis(t.tokens[kr[0]]), 30) + (kr[1] > kr[0] ? ' \u2026 ' + trunc(vis(t.tokens[kr[1]]), 30) : '')));
        tt.appendChild(el('div', 'r', 'click: inspect this query'));
      });
    });
    cv.addEventListener('mouseleave', hideTip);
    cv.addEventListener('click', function (ev) {
      var rc = cv.getBoundingClientRect();
      var r = Math.min(R - 1, Math.floor((ev.clientY - rc.top) / scale));
      var qr = binRange(r, R, n);
      setQuery(qr[1]);
    });
    // axes: token labels where they fit, else position ticks with a token sample
    var yax = axisCanvas(AX, H, R, n, scale, t.tokens, false);
    var xax = axisCanvas(W, AX - 40, C, n, scale, t.tokens, true);
    box.style.gridTemplateColumns = AX + 'px ' + W + 'px';
    box.appendChild(yax); box.appendChild(cv); box.appendChild(el('div', 'axis-title', 'queries \u2193 / keys \u2192')); box.appendChild(xax);
    var desc = (R === n && C === n) ? 'exact: one pixel per (query, key)' :
      'block mean of ' + (n / R).toFixed(1) + ' \u00d7 ' + (n / C).toFixed(1) + ' tokens per cell (' + R + '\u00d7' + C + ' cells)';
    meta.textContent = t.name + ' \u2014 ' + n + ' tokens; ' + desc + (d.kind === 'overview' ? '; overview map (no top-k for this head)' : '') +
      '. Colour: ' + (S.scale === 'log' ? 'log scale over the 3 decades below the largest value' : 'linear from 0 to the largest value') + '.';
    meta.appendChild(legend(BLUES, S.scale === 'log' ? '\u2264' + fmt(qval(qlo)) : '0', fmt(vmaxv)));
    drawQuery(d);
  }
  function axisCanvas(w, h, bins, n, scale, tokens, horizontal) {
    var c = document.createElement('canvas'); c.className = 'ax';
    var dpr = window.devicePixelRatio || 1;
    c.width = w * dpr; c.height = h * dpr; c.style.width = w + 'px'; c.style.height = h + 'px';
    var g = c.getContext('2d'); g.scale(dpr, dpr);
    g.fillStyle = '#475467'; g.font = '10px ui-monospace, Menlo, Consolas, monospace';
    var cell = scale; // pixels per bin
    var perTok = bins === n;
    var step = perTok && cell >= 10 ? 1 : Math.max(1, Math.ceil(13 / cell));
    for (var b = 0; b < bins; b += step) {
      var p = binRange(b, bins, n)[0];
      var label = perTok && cell >= 10 ? trunc(vis(tokens[p]), 14) : p + ' ' + trunc(vis(tokens[p]), 9);
      var mid = (b + 0.5) * cell;
      if (horizontal) {
        g.save(); g.translate(mid + 3, 4); g.rotate(Math.PI / 3); g.textAlign = 'left'; g.textBaseline = 'middle'; g.fillText(label, 0, 0); g.restore();
      } else {
        g.textAlign = 'right'; g.textBaseline = 'middle'; g.fillText(label, w - 5, Math.max(6, Math.min(h - 6, mid)));
      }
    }
    return c;
  }
  function setQuery(q) {
    var t = TEXTS[S.text]; if (!t) return;
    S.query = Math.max(0, Math.min(t.n_tokens - 1, q | 0));
    hideTip();
    drawMap();
  }
  function drawQuery(d) {
    var box = clear(document.getElementById('query-box'));
    var t = TEXTS[S.text];
    if (!t) { box.appendChild(el('p', 'note', D.maps_note || 'No texts were mapped.')); return; }
    var n = t.n_tokens, qi = S.query === null ? n - 1 : S.query;
    var ctl = el('div', 'qctl');
    ctl.appendChild(el('span', 'label', 'query token'));
    var prev = el('button', 'seg', '\u2190'), next = el('button', 'seg', '\u2192');
    var num = document.createElement('input'); num.type = 'number'; num.min = 0; num.max = n - 1; num.value = qi; num.id = 'query-input';
    var rng = document.createElement('input'); rng.type = 'range'; rng.min = 0; rng.max = n - 1; rng.value = qi;
    prev.addEventListener('click', function () { setQuery(qi - 1); });
    next.addEventListener('click', function () { setQuery(qi + 1); });
    num.addEventListener('change', function () { setQuery(parseInt(num.value, 10) || 0); });
    rng.addEventListener('change', function () { setQuery(parseInt(rng.value, 10) || 0); });
    ctl.appendChild(prev); ctl.appendChild(num); ctl.appendChild(next);
    var of = el('span', 'label', 'of ' + n); of.title = 'or click a row of the map'; ctl.appendChild(of);
    rng.className = 'qrange'; ctl.appendChild(rng);
    box.appendChild(ctl);
    // context around the query
    var cx = el('div', 'context'); cx.id = 'query-context';
    var w = {};
    if (d && d.pos) for (var k = 0; k < d.k; k++) { var p = d.pos[qi * d.k + k]; if (p >= 0 && d.w[qi * d.k + k] > 0) w[p] = d.w[qi * d.k + k]; }
    for (var i = Math.max(0, qi - 24); i <= qi; i++) {
      var sp = el('span', i === qi ? 'q' : null, t.tokens[i]);
      if (w[i] !== undefined) sp.style.background = css(ramp(BLUES, 0.12 + 0.33 * Math.sqrt(w[i])));  // stays light: text readable
      cx.appendChild(sp);
    }
    box.appendChild(el('h4', null, 'context (up to the query; shaded = attended)'));
    box.appendChild(cx);
    box.appendChild(el('h4', null, 'top attended tokens'));
    if (!d || !d.pos) {
      box.appendChild(el('p', 'note', d ? 'Top-k keys were not recorded for this head (overview map only); add it with --maps ' + site(S.layer, S.head) + '.' : 'No map for this head.'));
      return;
    }
    var tb = el('table', 'topk'); tb.id = 'topk-table';
    var hr = el('tr'); ['#', 'pos', 'token', 'weight', ''].forEach(function (x) { hr.appendChild(el('th', null, x)); }); tb.appendChild(hr);
    for (k = 0; k < d.k; k++) {
      var pp = d.pos[qi * d.k + k], ww = d.w[qi * d.k + k];
      if (pp < 0 || ww <= 0) continue;  // fewer than k keys with any weight
      var tr = el('tr');
      tr.appendChild(el('td', 'num', k + 1)); tr.appendChild(el('td', 'num pos', pp));
      var td = el('td'); td.appendChild(el('span', 'tok', t.tokens[pp])); tr.appendChild(td);
      tr.appendChild(el('td', 'num', fmt(ww)));
      var bt = el('td'); var bar = el('div', 'bar'); bar.style.width = Math.max(1, Math.round(80 * ww)) + 'px'; bt.appendChild(bar); tr.appendChild(bt);
      tb.appendChild(tr);
    }
    box.appendChild(tb);
  }

  // ---- selected head ----
  function markSelected() {
    var key = String(S.layer) + ',' + S.head;
    var cells = document.querySelectorAll('.grid .cell');
    for (var i = 0; i < cells.length; i++) {
      var c = cells[i];
      var on = c.getAttribute('data-layer') + ',' + c.getAttribute('data-head') === key;
      if (on) c.classList.add('sel'); else c.classList.remove('sel');
    }
  }
  function drawHead() {
    var l = S.layer, h = S.head, r = HEADS[site(l, h)] || { roles: [] };
    var hv = document.getElementById('head-view');
    hv.setAttribute('data-layer', l); hv.setAttribute('data-head', h);
    var title = clear(document.getElementById('head-title'));
    title.appendChild(el('span', 'big', site(l, h)));
    title.appendChild(el('span', 'sub', 'layer ' + l + ', head ' + h + (META.n_kv_heads ? ' (KV head ' + Math.floor(h / (NH / META.n_kv_heads)) + ')' : '')));
    (r.roles && r.roles.length ? r.roles : [null]).forEach(function (x) {
      var c = el('span', x ? 'chip' : 'chip none', x || 'no role'); if (x) c.style.background = ROLE_COLORS[x] || '#555'; title.appendChild(c);
    });
    var tb = clear(document.getElementById('head-values'));
    var hr = el('tr'); hr.appendChild(el('th', null, 'metric')); hr.appendChild(el('th', null, BASE ? 'after' : 'value'));
    if (BASE) { hr.appendChild(el('th', null, 'before')); hr.appendChild(el('th', null, '\u0394')); }
    hr.appendChild(el('th', null, 'rank'));
    tb.appendChild(hr);
    METRICS.forEach(function (m) {
      var tr = el('tr'), v = value(HEADS, l, h, m);
      var td0 = el('td', null, m); if (META.formulas && META.formulas[m]) td0.title = META.formulas[m];
      tr.appendChild(td0); tr.appendChild(el('td', 'num', fmt(v)));
      if (BASE) { var b = value(BASE, l, h, m); tr.appendChild(el('td', 'num', fmt(b))); tr.appendChild(el('td', 'num', v !== null && b !== null ? fmtSigned(v - b) : '–')); }
      var rank = '–';
      if (v !== null) { var above = 0, tot = 0; for (var k in HEADS) { var x = HEADS[k][m]; if (typeof x === 'number' && isFinite(x)) { tot++; if (x > v) above++; } } rank = (above + 1) + ' / ' + tot; }
      tr.appendChild(el('td', 'num', rank));
      tb.appendChild(tr);
    });
    drawMap();
  }
  function select(l, h, fromClick) {
    S.layer = l; S.head = h;
    var ds = document.getElementById('detail-select');
    if (ds) { var want = site(l, h), hit = false; for (var i = 0; i < ds.options.length; i++) if (ds.options[i].value === want) { ds.selectedIndex = i; hit = true; } if (!hit) ds.selectedIndex = 0; }
    markSelected(); drawHead();
    if (fromClick && history.replaceState) history.replaceState(null, '', '#' + site(l, h));
  }

  // ---- controls of the head view ----
  function buildHeadControls() {
    var bar = document.getElementById('head-bar');
    if (TEXTS.length > 1) {
      bar.appendChild(el('span', 'label', 'text'));
      TEXTS.forEach(function (t, i) {
        var b = el('button', 'seg' + (i === S.text ? ' on' : ''), t.name);
        b.addEventListener('click', function () {
          S.text = i; S.query = null;
          Array.prototype.forEach.call(bar.querySelectorAll('button[data-text]'), function (x, j) { x.classList.toggle('on', j === i); });
          drawMap();
        });
        b.setAttribute('data-text', i); bar.appendChild(b);
      });
    }
    if (TEXTS.length) {
      bar.appendChild(el('span', 'label', 'colour'));
      ['log', 'linear'].forEach(function (s) {
        var b = el('button', 'seg' + (S.scale === s ? ' on' : ''), s); b.setAttribute('data-scale', s);
        b.addEventListener('click', function () {
          S.scale = s;
          Array.prototype.forEach.call(bar.querySelectorAll('button[data-scale]'), function (x) { x.classList.toggle('on', x.getAttribute('data-scale') === s); });
          drawMap();
        });
        bar.appendChild(b);
      });
      var order = D.maps.detail_order || Object.keys(TEXTS[0].heads);
      var mapped = order.filter(function (k) { return TEXTS[0].heads[k] && TEXTS[0].heads[k].kind === 'detail'; });
      if (mapped.length && mapped.length < NL * NH) {
        bar.appendChild(el('span', 'label', 'detailed heads'));
        var sel = document.createElement('select'); sel.id = 'detail-select';
        var none = document.createElement('option'); none.value = ''; none.textContent = '\u2014 ' + mapped.length + ' heads \u2014'; sel.appendChild(none);
        mapped.forEach(function (k) {
          var o = document.createElement('option'); o.value = k;
          var r = HEADS[k]; o.textContent = k + (r && r.roles && r.roles.length ? ' \u00b7 ' + r.roles.join(', ') : '');
          sel.appendChild(o);
        });
        sel.addEventListener('change', function () { var m = /^L(\d+)H(\d+)$/.exec(sel.value); if (m) select(+m[1], +m[2], true); });
        bar.appendChild(sel);
      }
    }
  }

  // ---- provenance ----
  function buildProvenance() {
    var tb = document.getElementById('prov-table');
    function row(k, v, mono) {
      var tr = el('tr'); tr.appendChild(el('th', null, k));
      var td = el('td');
      if (v instanceof Node) td.appendChild(v); else if (mono) td.appendChild(el('code', null, v)); else td.textContent = v;
      tr.appendChild(td); tb.appendChild(tr);
    }
    row('model', META.model || '–', true);
    row('shape', NL + ' layers \u00d7 ' + NH + ' query heads, ' + (META.n_kv_heads || '?') + ' KV heads');
    row('headlab version', META.headlab_version || '–', true);
    var pre = el('pre', 'cmd', META.command || '–'); pre.id = 'prov-command'; row('command', pre);
    var texts = el('table', 'vals'); var th = el('tr'); th.appendChild(el('th', null, 'text')); th.appendChild(el('th', null, 'tokens')); texts.appendChild(th);
    (META.texts || []).forEach(function (t) { var tr = el('tr'); tr.appendChild(el('td', null, t.name)); tr.appendChild(el('td', 'num', t.n_tokens)); texts.appendChild(tr); });
    row('texts', texts);
    row('edits', (META.edits && META.edits.length) ? META.edits.join('; ') : 'none');
    row('pattern', META.pattern || 'none');
    var ft = el('table', 'vals');
    Object.keys(META.formulas || {}).forEach(function (m) { var tr = el('tr'); tr.appendChild(el('td', null, m)); var td = el('td'); td.appendChild(el('code', null, META.formulas[m])); tr.appendChild(td); ft.appendChild(tr); });
    row('metric formulas', ft);
    var rt = el('table', 'vals');
    Object.keys(META.roles || {}).forEach(function (m) { var tr = el('tr'); tr.appendChild(el('td', null, m)); var td = el('td'); td.appendChild(el('code', null, META.roles[m])); tr.appendChild(td); rt.appendChild(tr); });
    row('role rules', rt);
    row('maps', D.maps ? D.maps.rule : (D.maps_note || 'none'));
    row('report generated', (D.generated || '–') + ' by headlab ' + (D.report_version || ''));
    var known = { model: 1, n_layers: 1, n_heads: 1, n_kv_heads: 1, headlab_version: 1, command: 1, texts: 1, metrics: 1, formulas: 1, roles: 1, edits: 1, pattern: 1 };
    Object.keys(META).forEach(function (k) {
      if (known[k]) return;
      var v = META[k];
      if (v !== null && typeof v === 'object') { var pre2 = el('pre', 'cmd json', JSON.stringify(v, null, 1)); row(k, pre2); }
      else row(k, String(v), true);
    });
  }

  // ---- start ----
  document.getElementById('model-name').textContent = META.model || '';
  buildAtlas();
  buildHeadControls();
  buildCompare();
  buildProvenance();
  var start = D.default_head || [0, 0];
  var m = /^#L(\d+)H(\d+)$/.exec(location.hash || '');
  if (m && +m[1] < NL && +m[2] < NH) start = [+m[1], +m[2]];
  select(start[0], start[1], false);
  function ready() {
    document.body.setAttribute('data-ready', '1');
    window.__headlabRenderMs = performance.now() - T0;
  }
  if (mapsState === 'pending') {
    inflateAll().then(function () { mapsState = 'ready'; }, function () { mapsState = 'failed'; })
      .then(function () { drawMap(); ready(); });
  } else ready();
})();
