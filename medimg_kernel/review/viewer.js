// The review slice viewer's front end (anywidget ESM; no imports, no network).
//
// The whole volume lives here: image (int16 HU) and labels (uint8), both [z, y, x] C-order.
// Axial, coronal and sagittal slices are composited on small offscreen canvases at one pixel
// per voxel and drawn scaled by the voxel spacing, so a slice change never reaches the kernel.
//
// View coordinates mirror medimg_kernel/review/editing.py (keep the two in step; the kernel
// tests check this file's viewToVoxel). (row, col) are view pixels as displayed: row 0 top.
//   axial:    slice z, row y,          col x  (anterior top, patient right on the left)
//   coronal:  slice y, row nz - 1 - z, col x  (superior top)
//   sagittal: slice x, row nz - 1 - z, col y  (superior top, anterior left)
//
// Messages to the kernel: {type: "request_volume", load_id} after drawing a load's preview planes;
//   {type: "stroke", view, slice, points: [[row, col], ...], radius, segment, erase} on mouse-up;
//   {type: "fill", view, slice, point: [row, col], segment} on a fill click.
// From the kernel: {type: "volume", load_id} + buffers [int16 image, uint8 labels];
//   {type: "patch"} + buffers [uint32 flat indices, uint8 values];
//   {type: "labels", load_id} + buffers [uint8 labels].
// Benchmark hooks: window.__medimgViewer = {sliceLatenciesMs, drawMs, firstImageAt, loads, renderAt, loadAt, volumeAt}
// (drawMs: time spent drawing the frames that ended a slice change)
// (performance.now() ms: first render; the latest load's start, first image and whole volume).

const VIEWS = ["axial", "coronal", "sagittal"];
const SLICE_AXIS = { axial: 0, coronal: 1, sagittal: 2 }; // index into cursor [z, y, x]
const ORIENT = {
  axial: ["A", "P", "R", "L"], // top, bottom, left, right
  coronal: ["S", "I", "R", "L"],
  sagittal: ["S", "I", "A", "P"],
};

const perf = (window.__medimgViewer ||= { sliceLatenciesMs: [], drawMs: [], firstImageAt: null, loads: 0 });

// --- geometry (mirrors editing.py) ---------------------------------------------------------------

export function viewShape(view, shape) {
  const [nz, ny, nx] = shape;
  return { axial: [nz, ny, nx], coronal: [ny, nz, nx], sagittal: [nx, nz, ny] }[view];
}

function viewSpacing(view, spacing) {
  const [dz, dy, dx] = spacing;
  return { axial: [dy, dx], coronal: [dz, dx], sagittal: [dz, dy] }[view]; // [row mm, col mm]
}

export function viewToVoxel(view, s, row, col, shape) {
  const nz = shape[0];
  switch (view) {
    case "axial": return [s, row, col];
    case "coronal": return [nz - 1 - row, s, col];
    case "sagittal": return [nz - 1 - row, col, s];
  }
}

export function voxelToView(view, z, y, x, shape) {
  const nz = shape[0];
  switch (view) {
    case "axial": return [z, y, x];
    case "coronal": return [y, nz - 1 - z, x];
    case "sagittal": return [x, nz - 1 - z, y];
  }
}

// Flat index = origin + row * rowStride + col * colStride for the pixels of one view slice.
function sliceStrides(view, s, shape) {
  const [nz, ny, nx] = shape;
  const plane = ny * nx;
  switch (view) {
    case "axial": return [s * plane, nx, 1];
    case "coronal": return [(nz - 1) * plane + s * nx, -plane, 1];
    case "sagittal": return [(nz - 1) * plane + s, -plane, nx];
  }
}

export function discOffsets(radius) {
  const out = [];
  for (let dr = -radius; dr <= radius; dr++)
    for (let dc = -radius; dc <= radius; dc++) if (dr * dr + dc * dc <= radius * radius) out.push([dr, dc]);
  return out;
}

export function polylinePixels(points) {
  if (!points.length) return [];
  const out = [[points[0][0], points[0][1]]];
  for (let k = 1; k < points.length; k++) {
    const [r0, c0] = points[k - 1];
    const dr = points[k][0] - r0, dc = points[k][1] - c0;
    const n = Math.max(Math.abs(dr), Math.abs(dc));
    for (let i = 1; i <= n; i++) out.push([r0 + Math.floor((dr * i) / n + 0.5), c0 + Math.floor((dc * i) / n + 0.5)]);
  }
  return out;
}

// --- data -------------------------------------------------------------------------------------

function typed(value, Ctor) {
  if (!value) return null;
  let buf = value, off = 0, len = value.byteLength;
  if (ArrayBuffer.isView(value)) { buf = value.buffer; off = value.byteOffset; }
  if (len === 0) return null;
  if (off % Ctor.BYTES_PER_ELEMENT) return new Ctor(buf.slice(off, off + len));
  return new Ctor(buf, off, len / Ctor.BYTES_PER_ELEMENT);
}

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

// --- the view ---------------------------------------------------------------------------------

function el(tag, attrs = {}, parent = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "className") node.className = v;
    else node.setAttribute(k, v);
  }
  if (parent) parent.appendChild(node);
  return node;
}

function render({ model, el: root }) {
  perf.renderAt ??= performance.now();
  const st = {
    image: null, labels: null, complete: false, loadId: -1, shape: [0, 0, 0], spacing: [1, 1, 1],
    cursor: [0, 0, 0], window: model.get("window"), level: model.get("level"),
    grayLut: new Uint32Array(65536), segRgb: new Int32Array(256 * 3), segOn: new Uint8Array(256),
    segAlpha: new Int32Array(256), segName: [], alpha256: 128, pendingStamps: [], drawQueued: false, firstPending: false,
    hover: null, focus: "axial", drag: null, stroke: null, cursorTimer: null,
  };
  const views = {};
  root.classList.add("medimg-viewer");
  const toolbar = el("div", { className: "medimg-viewer-toolbar" }, root);
  const row = el("div", { className: "medimg-viewer-views" }, root);
  const status = el("div", { className: "medimg-viewer-status", "data-role": "status" }, root);

  for (const name of VIEWS) {
    const panel = el("div", { className: "medimg-viewer-panel", "data-view": name }, row);
    const canvas = el("canvas", { className: "medimg-viewer-canvas", "data-view": name, tabindex: "0" }, panel);
    const [t, b, l, r] = ORIENT[name];
    el("span", { className: "medimg-viewer-orient top", text: t }, panel);
    el("span", { className: "medimg-viewer-orient bottom", text: b }, panel);
    el("span", { className: "medimg-viewer-orient left", text: l }, panel);
    el("span", { className: "medimg-viewer-orient right", text: r }, panel);
    const label = el("span", { className: "medimg-viewer-slice", "data-view": name }, panel);
    const off = document.createElement("canvas");
    views[name] = { name, panel, canvas, ctx: canvas.getContext("2d"), off, offCtx: off.getContext("2d"),
      label, imgData: null, zoom: 1, panX: 0, panY: 0, stale: true, geom: null };
  }
  buildToolbar();

  // --- colour tables ---
  function rebuildLut() {
    const w = Math.max(1, st.window), lo = st.level - w / 2;
    const lut = st.grayLut;
    for (let i = 0; i < 65536; i++) {
      let g = Math.round(((i - 32768 - lo) / w) * 255);
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      lut[i] = 0xff000000 | (g << 16) | (g << 8) | g;
    }
  }
  function rebuildSegments() {
    st.segOn.fill(0);
    st.segName = [];
    st.alpha256 = Math.round(Math.max(0, Math.min(1, model.get("opacity"))) * 256);
    for (const seg of model.get("segments") || []) {
      const [r, g, b] = hexToRgb(seg.color || "#ff00ff");
      st.segRgb.set([r, g, b], seg.value * 3);
      st.segOn[seg.value] = seg.visible === false ? 0 : 1;
      // a segment's own opacity (0-1, default 1) scales the overlay's
      const own = seg.opacity === undefined ? 1 : Math.max(0, Math.min(1, seg.opacity));
      st.segAlpha[seg.value] = Math.round(st.alpha256 * own);
      st.segName[seg.value] = seg.label;
    }
  }

  // --- loading ---
  // A load first draws the three preview planes of the widget state (written into otherwise empty
  // volumes), then asks the kernel for the whole volume, which arrives as one binary message.
  function load() {
    perf.loadAt = performance.now();
    st.loadId = model.get("_load_id");
    st.shape = model.get("shape");
    st.spacing = model.get("spacing");
    st.cursor = model.get("cursor").slice();
    st.complete = false;
    const [nz, ny, nx] = st.shape, plane = ny * nx;
    const preview = model.get("_preview");
    const sizes = [ny * nx, nz * nx, nz * ny];
    const total = sizes[0] + sizes[1] + sizes[2];
    if (!preview || preview.byteLength !== total * 3) { st.image = null; return; }
    const bytes = ArrayBuffer.isView(preview) ? new Uint8Array(preview.buffer, preview.byteOffset, preview.byteLength) : new Uint8Array(preview);
    const imgPlanes = new Int16Array(bytes.slice(0, total * 2).buffer); // a copy, aligned for int16
    const labPlanes = bytes.subarray(total * 2);
    const image = new Int16Array(nz * plane).fill(-1024), labels = new Uint8Array(nz * plane);
    const [cz, cy, cx] = st.cursor;
    let k = 0;
    for (let i = 0; i < sizes[0]; i++, k++) { image[cz * plane + i] = imgPlanes[k]; labels[cz * plane + i] = labPlanes[k]; }
    for (let z = 0; z < nz; z++) for (let x = 0; x < nx; x++, k++) { const idx = z * plane + cy * nx + x; image[idx] = imgPlanes[k]; labels[idx] = labPlanes[k]; }
    for (let z = 0; z < nz; z++) for (let y = 0; y < ny; y++, k++) { const idx = z * plane + y * nx + cx; image[idx] = imgPlanes[k]; labels[idx] = labPlanes[k]; }
    st.image = image;
    st.labels = labels;
    for (const v of Object.values(views)) { v.zoom = 1; v.panX = 0; v.panY = 0; v.stale = true; v.imgData = null; }
    perf.firstImageAt = null;
    perf.volumeAt = null;
    perf.loads += 1;
    st.firstPending = true;
    requestDraw();
    model.send({ type: "request_volume", load_id: st.loadId });
  }

  function receiveVolume(msg, buffers) {
    if (msg.load_id !== st.loadId) return; // a previous case's volume, still in flight
    st.image = typed(buffers[0], Int16Array);
    st.labels = typed(buffers[1], Uint8Array);
    st.complete = true;
    perf.volumeAt = performance.now();
    markStale();
    requestDraw();
  }

  // --- drawing ---
  function geometry(v) {
    const [, rows, cols] = viewShape(v.name, st.shape);
    const [rowMm, colMm] = viewSpacing(v.name, st.spacing);
    const W = v.canvas.width, H = v.canvas.height;
    const base = Math.min(W / (cols * colMm), H / (rows * rowMm));
    const sx = base * v.zoom * colMm, sy = base * v.zoom * rowMm;
    return { rows, cols, sx, sy, ox: (W - cols * sx) / 2 + v.panX, oy: (H - rows * sy) / 2 + v.panY };
  }

  function composite(v) {
    const [n, rows, cols] = viewShape(v.name, st.shape);
    const s = st.cursor[SLICE_AXIS[v.name]];
    if (!v.imgData || v.imgData.width !== cols || v.imgData.height !== rows) {
      v.off.width = cols; v.off.height = rows;
      v.imgData = v.offCtx.createImageData(cols, rows);
      v.px = new Uint32Array(v.imgData.data.buffer);
    }
    const [origin, rs, cs] = sliceStrides(v.name, Math.min(s, n - 1), st.shape);
    const img = st.image, lab = st.labels, lut = st.grayLut, px = v.px;
    const on = st.segOn, rgb = st.segRgb, alpha = st.segAlpha;
    const outline = model.get("overlay_mode") === "outline";
    let k = 0;
    for (let r = 0; r < rows; r++) {
      let idx = origin + r * rs;
      for (let c = 0; c < cols; c++, idx += cs, k++) {
        const L = lab ? lab[idx] : 0;
        const gray = lut[img[idx] + 32768];
        if (L && on[L]) {
          if (outline) {
            // the segment's edge in this plane, opaque: a voxel with a 4-neighbour of another label
            const edge = r === 0 || c === 0 || r === rows - 1 || c === cols - 1 || lab[idx - rs] !== L
              || lab[idx + rs] !== L || lab[idx - cs] !== L || lab[idx + cs] !== L;
            px[k] = edge ? 0xff000000 | (rgb[L * 3 + 2] << 16) | (rgb[L * 3 + 1] << 8) | rgb[L * 3] : gray;
            continue;
          }
          const a = alpha[L], ia = 256 - a, g = gray & 255;
          const R = (g * ia + rgb[L * 3] * a) >> 8, G = (g * ia + rgb[L * 3 + 1] * a) >> 8, B = (g * ia + rgb[L * 3 + 2] * a) >> 8;
          px[k] = 0xff000000 | (B << 16) | (G << 8) | R;
        } else px[k] = gray;
      }
    }
    v.offCtx.putImageData(v.imgData, 0, 0);
    v.stale = false;
    v.label.textContent = `${v.name} ${s + 1}/${n}`;
  }

  function draw(v) {
    if (!st.image) return;
    if (v.stale) composite(v);
    const g = (v.geom = geometry(v));
    const ctx = v.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, v.canvas.width, v.canvas.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(v.off, g.ox, g.oy, g.cols * g.sx, g.rows * g.sy);
    const [, row, col] = voxelToView(v.name, st.cursor[0], st.cursor[1], st.cursor[2], st.shape);
    const x = g.ox + (col + 0.5) * g.sx, y = g.oy + (row + 0.5) * g.sy;
    ctx.strokeStyle = "rgba(255, 215, 0, 0.6)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x, g.oy); ctx.lineTo(x, g.oy + g.rows * g.sy);
    ctx.moveTo(g.ox, y); ctx.lineTo(g.ox + g.cols * g.sx, y);
    ctx.stroke();
    const tool = model.get("tool");
    if (st.hover && st.hover.view === v.name && (tool === "brush" || tool === "eraser")) {
      const rad = model.get("brush_radius") + 0.5;
      ctx.strokeStyle = tool === "eraser" ? "#fff" : "#0ff";
      ctx.beginPath();
      ctx.ellipse(g.ox + (st.hover.col + 0.5) * g.sx, g.oy + (st.hover.row + 0.5) * g.sy, rad * g.sx, rad * g.sy, 0, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }

  function requestDraw(eventTime) {
    if (eventTime !== undefined) st.pendingStamps.push(eventTime);
    if (st.drawQueued) return;
    st.drawQueued = true;
    requestAnimationFrame(() => {
      st.drawQueued = false;
      const start = performance.now();
      for (const name of VIEWS) draw(views[name]);
      const now = performance.now();
      if (st.pendingStamps.length) perf.drawMs.push(now - start);
      for (const t0 of st.pendingStamps) perf.sliceLatenciesMs.push(now - t0);
      st.pendingStamps.length = 0;
      if (st.firstPending && st.image) { st.firstPending = false; perf.firstImageAt = now; }
      updateStatus();
    });
  }

  function markStale(names = VIEWS) { for (const n of names) views[n].stale = true; }

  function updateStatus() {
    if (!st.image) { status.textContent = "no image"; return; }
    if (!st.complete) { status.textContent = "loading the volume…"; return; }
    const v = st.focus, [n] = viewShape(v, st.shape);
    let text = `${v} ${st.cursor[SLICE_AXIS[v]] + 1}/${n}`;
    const h = st.hover;
    if (h) {
      const [z, y, x] = viewToVoxel(h.view, st.cursor[SLICE_AXIS[h.view]], h.row, h.col, st.shape);
      if (z >= 0 && y >= 0 && x >= 0 && z < st.shape[0] && y < st.shape[1] && x < st.shape[2]) {
        const idx = (z * st.shape[1] + y) * st.shape[2] + x;
        const L = st.labels ? st.labels[idx] : 0;
        text += ` · voxel z ${z} y ${y} x ${x} · ${st.image[idx]} HU` + (L ? ` · ${st.segName[L] || "label " + L}` : "");
      }
    }
    status.textContent = `${text} · W ${Math.round(st.window)} L ${Math.round(st.level)}`;
  }

  // --- interaction ---
  function setSlice(viewName, delta, eventTime) {
    if (!st.complete) return; // only the preview planes are here yet
    const axis = SLICE_AXIS[viewName];
    const n = st.shape[axis];
    const next = Math.max(0, Math.min(n - 1, st.cursor[axis] + delta));
    if (next === st.cursor[axis]) return;
    st.cursor[axis] = next;
    markStale([viewName]);
    requestDraw(eventTime);
    syncCursorSoon();
  }

  function syncCursorSoon() {
    clearTimeout(st.cursorTimer);
    st.cursorTimer = setTimeout(() => { model.set("cursor", st.cursor.slice()); model.save_changes(); }, 300);
  }

  function pixelAt(v, e) {
    const rect = v.canvas.getBoundingClientRect();
    const k = v.canvas.width / Math.max(1, rect.width);
    const g = v.geom || geometry(v);
    const px = (e.clientX - rect.left) * k, py = (e.clientY - rect.top) * k;
    return { view: v.name, row: Math.floor((py - g.oy) / g.sy), col: Math.floor((px - g.ox) / g.sx), px, py };
  }

  function moveCursorTo(p) {
    if (!st.complete) return;
    const [rows, cols] = viewShape(p.view, st.shape).slice(1);
    const row = Math.max(0, Math.min(rows - 1, p.row)), col = Math.max(0, Math.min(cols - 1, p.col));
    const vox = viewToVoxel(p.view, st.cursor[SLICE_AXIS[p.view]], row, col, st.shape);
    for (const name of VIEWS) if (name !== p.view && vox[SLICE_AXIS[name]] !== st.cursor[SLICE_AXIS[name]]) views[name].stale = true;
    st.cursor = vox;
    requestDraw();
    syncCursorSoon();
  }

  function stamp(viewName, s, points, radius, segment, erase) {
    const [, rows, cols] = viewShape(viewName, st.shape);
    const [origin, rs, cs] = sliceStrides(viewName, s, st.shape);
    const disc = discOffsets(radius), lab = st.labels;
    for (const [pr, pc] of polylinePixels(points)) {
      for (const [dr, dc] of disc) {
        const r = pr + dr, c = pc + dc;
        if (r < 0 || c < 0 || r >= rows || c >= cols) continue;
        const idx = origin + r * rs + c * cs;
        if (erase) { if (lab[idx] === segment) lab[idx] = 0; } else lab[idx] = segment;
      }
    }
    markStale();
    requestDraw();
  }

  function onPointerDown(v, e) {
    if (!st.image) return;
    v.canvas.focus({ preventScroll: true });
    st.focus = v.name;
    const p = pixelAt(v, e);
    const tool = model.get("tool");
    v.canvas.setPointerCapture(e.pointerId);
    e.preventDefault();
    if (e.button === 1 || (e.button === 0 && e.shiftKey)) {
      st.drag = { mode: "pan", v, x: e.clientX, y: e.clientY, panX: v.panX, panY: v.panY };
    } else if (e.button === 2) {
      st.drag = { mode: "wl", x: e.clientX, y: e.clientY, window: st.window, level: st.level };
    } else if (e.button === 0 && tool !== "none" && !st.complete) {
      // no editing on the preview planes
    } else if (e.button === 0 && (tool === "brush" || tool === "eraser")) {
      const s = st.cursor[SLICE_AXIS[v.name]];
      st.stroke = { type: "stroke", view: v.name, slice: s, points: [[p.row, p.col]], radius: model.get("brush_radius"),
        segment: model.get("active_segment"), erase: tool === "eraser" };
      stamp(v.name, s, [[p.row, p.col]], st.stroke.radius, st.stroke.segment, st.stroke.erase);
    } else if (e.button === 0 && tool === "fill") {
      model.send({ type: "fill", view: v.name, slice: st.cursor[SLICE_AXIS[v.name]], point: [p.row, p.col], segment: model.get("active_segment") });
    } else if (e.button === 0) {
      st.drag = { mode: "cursor", v };
      moveCursorTo(p);
    }
  }

  function onPointerMove(v, e) {
    if (!st.image) return;
    const p = pixelAt(v, e);
    st.hover = p;
    const d = st.drag, k = v.canvas.width / Math.max(1, v.canvas.getBoundingClientRect().width);
    if (st.stroke && st.stroke.view === v.name) {
      const last = st.stroke.points[st.stroke.points.length - 1];
      if (last[0] !== p.row || last[1] !== p.col) {
        st.stroke.points.push([p.row, p.col]);
        stamp(v.name, st.stroke.slice, [last, [p.row, p.col]], st.stroke.radius, st.stroke.segment, st.stroke.erase);
      }
    } else if (d && d.mode === "pan") {
      d.v.panX = d.panX + (e.clientX - d.x) * k; d.v.panY = d.panY + (e.clientY - d.y) * k;
    } else if (d && d.mode === "wl") {
      st.window = Math.max(1, d.window + (e.clientX - d.x) * 4);
      st.level = d.level - (e.clientY - d.y) * 2;
      rebuildLut(); markStale();
    } else if (d && d.mode === "cursor") {
      moveCursorTo(p);
    }
    requestDraw();
  }

  function onPointerUp(v, e) {
    if (st.stroke) { model.send(st.stroke); st.stroke = null; }
    if (st.drag && st.drag.mode === "wl") {
      const { window: w, level: l } = st; // read both first: each set() re-reads the model's pair
      model.set("window", w); model.set("level", l); model.save_changes();
    }
    st.drag = null;
    if (v.canvas.hasPointerCapture(e.pointerId)) v.canvas.releasePointerCapture(e.pointerId);
  }

  function zoomAt(v, factor, px, py) {
    const g = v.geom || geometry(v);
    const W = v.canvas.width, H = v.canvas.height;
    const cx = px === undefined ? W / 2 : px, cy = py === undefined ? H / 2 : py;
    const zoom = Math.max(0.25, Math.min(32, v.zoom * factor));
    const f = zoom / v.zoom;
    // keep the image point under (cx, cy) fixed: new offset = c - (c - o) * f
    const ox = cx - (cx - g.ox) * f, oy = cy - (cy - g.oy) * f;
    v.zoom = zoom;
    const g2 = geometry(v);
    v.panX += ox - g2.ox; v.panY += oy - g2.oy;
    requestDraw();
  }

  function onWheel(v, e) {
    if (!st.image) return;
    e.preventDefault();
    st.focus = v.name;
    if (e.ctrlKey || e.metaKey) { const p = pixelAt(v, e); zoomAt(v, e.deltaY < 0 ? 1.15 : 1 / 1.15, p.px, p.py); return; }
    if (e.deltaY !== 0) setSlice(v.name, e.deltaY < 0 ? 1 : -1, e.timeStamp);
  }

  function onKey(v, e) {
    if (!st.image) return;
    const step = { ArrowUp: 1, ArrowDown: -1, PageUp: 10, PageDown: -10 }[e.key];
    if (step !== undefined) { e.preventDefault(); st.focus = v.name; setSlice(v.name, step, e.timeStamp); return; }
    if (e.key === "+" || e.key === "=") { e.preventDefault(); zoomAt(v, 1.25); }
    else if (e.key === "-") { e.preventDefault(); zoomAt(v, 1 / 1.25); }
    else if (e.key === "0") { e.preventDefault(); v.zoom = 1; v.panX = 0; v.panY = 0; requestDraw(); }
  }

  const cleanups = [];
  function listen(target, type, fn, opts) { target.addEventListener(type, fn, opts); cleanups.push(() => target.removeEventListener(type, fn, opts)); }
  for (const v of Object.values(views)) {
    listen(v.canvas, "pointerdown", (e) => onPointerDown(v, e));
    listen(v.canvas, "pointermove", (e) => onPointerMove(v, e));
    listen(v.canvas, "pointerup", (e) => onPointerUp(v, e));
    listen(v.canvas, "pointercancel", (e) => onPointerUp(v, e));
    listen(v.canvas, "pointerleave", () => { if (!st.drag && !st.stroke) { st.hover = null; requestDraw(); } });
    listen(v.canvas, "wheel", (e) => onWheel(v, e), { passive: false });
    listen(v.canvas, "keydown", (e) => onKey(v, e));
    listen(v.canvas, "focus", () => { st.focus = v.name; });
    listen(v.canvas, "contextmenu", (e) => e.preventDefault());
  }

  // --- sizing ---
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    row.style.height = `${model.get("view_height")}px`;
    for (const v of Object.values(views)) {
      const w = Math.max(1, Math.round(v.panel.clientWidth * dpr)), h = Math.max(1, Math.round(v.panel.clientHeight * dpr));
      if (v.canvas.width !== w || v.canvas.height !== h) { v.canvas.width = w; v.canvas.height = h; }
    }
    requestDraw();
  }
  const observer = new ResizeObserver(resize);
  observer.observe(row);

  // --- toolbar ---
  function buildToolbar() {
    toolbar.textContent = "";
    const presets = el("select", { className: "medimg-viewer-presets", title: "window/level preset" }, toolbar);
    el("option", { text: "W/L preset…", value: "" }, presets);
    for (const name of Object.keys(model.get("window_presets"))) el("option", { text: name, value: name }, presets);
    presets.onchange = () => {
      const wl = model.get("window_presets")[presets.value];
      if (wl) { model.set("window", wl[0]); model.set("level", wl[1]); model.save_changes(); }
      presets.value = "";
    };
    const tools = el("span", { className: "medimg-viewer-tools" }, toolbar);
    for (const tool of ["none", "brush", "eraser", "fill"]) {
      const b = el("button", { className: "medimg-viewer-tool", "data-tool": tool, type: "button", text: tool === "none" ? "pointer" : tool }, tools);
      b.classList.toggle("active", model.get("tool") === tool);
      b.onclick = () => { model.set("tool", tool); model.save_changes(); };
    }
    const radius = el("input", { className: "medimg-viewer-radius", type: "number", min: "0", max: "50", title: "brush radius (voxels)" }, toolbar);
    radius.value = model.get("brush_radius");
    radius.onchange = () => { model.set("brush_radius", Math.max(0, Math.min(50, parseInt(radius.value, 10) || 0))); model.save_changes(); };
    const mode = el("button", { className: "medimg-viewer-outline", type: "button",
      text: model.get("overlay_mode") === "outline" ? "show filled" : "show outlines",
      title: "show the segments filled or as their outlines" }, toolbar);
    mode.onclick = () => { model.set("overlay_mode", model.get("overlay_mode") === "outline" ? "fill" : "outline"); model.save_changes(); };
    const opacity = el("input", { className: "medimg-viewer-opacity", type: "range", min: "0", max: "1", step: "0.05", title: "overlay opacity" }, toolbar);
    opacity.value = model.get("opacity");
    opacity.oninput = () => { model.set("opacity", parseFloat(opacity.value)); model.save_changes(); };
    const segs = el("span", { className: "medimg-viewer-segments" }, toolbar);
    for (const seg of model.get("segments") || []) {
      const item = el("label", { className: "medimg-viewer-segment", "data-value": String(seg.value) }, segs);
      item.classList.toggle("active", model.get("active_segment") === seg.value);
      const box = el("input", { type: "checkbox", title: "visible" }, item);
      box.checked = seg.visible !== false;
      box.onchange = () => {
        model.set("segments", model.get("segments").map((s) => (s.value === seg.value ? { ...s, visible: box.checked } : s)));
        model.save_changes();
      };
      el("span", { className: "medimg-viewer-swatch", style: `background:${seg.color}` }, item);
      const name = el("span", { text: seg.label, title: "make active" }, item);
      name.onclick = (e) => { e.preventDefault(); model.set("active_segment", seg.value); model.save_changes(); };
    }
  }

  // --- model events ---
  const on = (ev, fn) => { model.on(ev, fn); cleanups.push(() => model.off(ev, fn)); };
  on("change:_load_id", () => { rebuildSegments(); load(); });
  on("change:window change:level", () => { st.window = model.get("window"); st.level = model.get("level"); rebuildLut(); markStale(); requestDraw(); });
  on("change:segments change:opacity change:overlay_mode", () => { rebuildSegments(); buildToolbar(); markStale(); requestDraw(); });
  on("change:tool change:brush_radius change:active_segment change:window_presets", () => { buildToolbar(); requestDraw(); });
  on("change:view_height", resize);
  on("change:cursor", () => {
    const c = model.get("cursor");
    if (c.every((x, i) => x === st.cursor[i])) return;
    st.cursor = c.slice(); markStale(); requestDraw();
  });
  on("msg:custom", (msg, buffers) => {
    if (msg.type === "volume") receiveVolume(msg, buffers);
    else if (msg.type === "patch" && st.labels) {
      const idx = typed(buffers[0], Uint32Array), val = typed(buffers[1], Uint8Array);
      for (let i = 0; i < idx.length; i++) st.labels[idx[i]] = val[i];
      markStale(); requestDraw();
    } else if (msg.type === "labels" && msg.load_id === st.loadId && st.complete) {
      st.labels = typed(buffers[0], Uint8Array); markStale(); requestDraw();
    }
  });

  rebuildLut();
  rebuildSegments();
  if (model.get("_load_id") > 0) load();
  resize();
  return () => { observer.disconnect(); clearTimeout(st.cursorTimer); for (const fn of cleanups) fn(); };
}

export default { render };
