"""Docked widgets of the ceimap plugin: preprocess, register, decompose, segment, measure.

Each widget is a magicgui ``Container`` made by a ``make_*_widget(viewer)`` factory (npe2 injects the viewer).
It only gathers layers and options and runs a function of :mod:`ceimap.napari_plugin._actions` (a library call, no
science here) in a napari worker thread, with a progress bar in the activity dock and a *Cancel* button; the
result layers are added when the worker returns (a result named like an existing layer updates it). A failure
is shown as a napari notification naming the problem; the viewer never blocks.

Cancelling stops the worker between steps (each step is one library call; a step that is running finishes in
the background and its result is dropped), so a cancelled action changes nothing in the viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox, Table

from . import _actions as act


def _layers_where(viewer, predicate, layer_type=None):
    def choices(_widget=None):
        return [(la.name, la) for la in viewer.layers
                if (layer_type is None or isinstance(la, layer_type)) and predicate(la)]
    return choices


def add_layers(viewer, layers) -> list:
    """Add LayerData tuples to the viewer (public API only); a tuple named like an existing layer of the same
    type updates that layer's data and properties instead."""
    out = []
    for data, kwargs, layer_type in layers:
        kwargs = dict(kwargs)
        name = kwargs.get("name")
        existing = viewer.layers[name] if name in viewer.layers else None
        if existing is not None and type(existing).__name__.lower() == layer_type:
            existing.data = data
            for key, value in kwargs.items():
                if key != "name":
                    setattr(existing, key, value)
            out.append(existing)
        else:
            out.append(getattr(viewer, f"add_{layer_type}")(data, **kwargs))
    return out


def one_step(message: str, action):
    """The ``steps()`` generator of a one-call action: report ``message``, then return ``action()``'s layers."""
    yield message
    return action()


class _ActionWidget(Container):
    """A container with a Run and a Cancel button that runs ``self.steps()`` in a worker thread.

    Subclasses define ``steps()``: a generator yielding progress messages (strings) and finally returning the
    list of layer data tuples to add.
    """

    title = "ceimap"
    run_text = "Run"

    def __init__(self, viewer, widgets):
        self.viewer = viewer
        self.status = Label(value="")
        self.run_button = PushButton(text=self.run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[*widgets, self.run_button, self.cancel_button, self.status])
        self.worker = None
        self.last_result = None
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(lambda _e=None: self.reset_choices())

    # -- worker plumbing -------------------------------------------------------------------------------
    def start(self, _value=None):
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return self.worker
        try:
            steps = self.steps()
        except act.LayerError as exc:
            self._fail(exc)
            return None
        worker = create_worker(lambda: (yield from steps), _progress={"desc": self.title})
        worker.yielded.connect(self._progress)
        worker.returned.connect(self._finish)
        worker.errored.connect(self._fail)
        worker.finished.connect(self._done)
        self.worker = worker
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = "running…"
        worker.start()
        return worker

    def cancel(self, _value=None):
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "cancelling (the current step finishes in the background)…"

    def _progress(self, message):
        self.status.value = str(message)

    def _finish(self, layers):
        if self.worker is not None and self.worker.abort_requested:
            self.status.value = "cancelled"
            return
        add_layers(self.viewer, layers or [])
        self.status.value = "done"
        self.last_result = layers

    def _fail(self, exc):
        from napari.utils.notifications import show_error

        self.status.value = f"failed: {exc}"
        show_error(f"ceimap {self.title}: {exc}")

    def _done(self):
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def steps(self):  # pragma: no cover - abstract
        raise NotImplementedError


class PreprocessWidget(_ActionWidget):
    """Align the energy frames of a stack and convert it to optical density (I0: auto or a Shapes region)."""

    title = "preprocess"
    run_text = "Align frames + OD"

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        from napari.layers import Image, Shapes

        self.stack = ComboBox(label="stack", choices=_layers_where(viewer, act.is_stack_layer, Image))
        self.i0_region = ComboBox(label="I0 region", nullable=True,
                                  choices=_layers_where(viewer, lambda la: True, Shapes))
        self.align = CheckBox(label="align frames", value=True)
        super().__init__(viewer, [self.stack, self.i0_region, self.align])

    def steps(self):
        layer = self.stack.value
        if layer is None:
            raise act.LayerError("choose a stack layer")
        region = None if self.i0_region.value is None else list(self.i0_region.value.data)
        align = bool(self.align.value)

        return one_step(f"{layer.name}: aligning frames and converting to OD",
                        lambda: [act.preprocess(layer, i0_region_world=region, align=align)])


class RegisterWidget(_ActionWidget):
    """Register a stack onto the SEM: automatic (mutual information) or landmark pairs (two Points layers)."""

    title = "register"
    run_text = "Register onto SEM"

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        from napari.layers import Image, Points

        self.stack = ComboBox(label="stack", choices=_layers_where(viewer, act.is_stack_layer, Image))
        self.sem = ComboBox(label="SEM", choices=_layers_where(viewer, act.is_sem_layer, Image))
        self.mode = ComboBox(label="mode", choices=["automatic", "landmarks"], value="automatic")
        points = _layers_where(viewer, lambda la: True, Points)
        self.stxm_points = ComboBox(label="STXM points", nullable=True, choices=points)
        self.sem_points = ComboBox(label="SEM points", nullable=True, choices=points)
        self.kind = ComboBox(label="landmark transform", choices=["similarity", "affine"], value="similarity")
        super().__init__(viewer, [self.stack, self.sem, self.mode, self.stxm_points, self.sem_points, self.kind])

    def steps(self):
        layer, sem = self.stack.value, self.sem.value
        if layer is None or sem is None:
            raise act.LayerError("choose a stack layer and the SEM layer")
        kwargs = {}
        if self.mode.value == "landmarks":
            if self.stxm_points.value is None or self.sem_points.value is None:
                raise act.LayerError("landmark mode: choose the Points layer clicked on the stack and the one on "
                                     "the SEM")
            kwargs = {"stxm_points_world": np.asarray(self.stxm_points.value.data),
                      "sem_points_world": np.asarray(self.sem_points.value.data), "kind": self.kind.value}

        return one_step(f"{layer.name}: registering onto {sem.name}", lambda: [act.register(layer, sem, **kwargs)])


class DecomposeWidget(_ActionWidget):
    """PCA / NMF / k-means of an OD stack: abundance maps (and clusters) as layers, spectra in the table."""

    title = "decompose"
    run_text = "Decompose"

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        from napari.layers import Image

        self.stack = ComboBox(label="OD stack", choices=_layers_where(viewer, act.is_stack_layer, Image))
        self.method = ComboBox(label="method", choices=["pca", "nmf", "kmeans"], value="pca")
        self.n_components = SpinBox(label="components (0 = from noise)", value=0, min=0, max=20)
        super().__init__(viewer, [self.stack, self.method, self.n_components])

    def steps(self):
        layer = self.stack.value
        if layer is None:
            raise act.LayerError("choose an OD stack layer")
        method, n = self.method.value, int(self.n_components.value) or None

        size = {"n_clusters" if method == "kmeans" else "n_components": n}
        return one_step(f"{layer.name}: {method}", lambda: act.decompose(layer, method=method, **size))


class SegmentWidget(_ActionWidget):
    """Unsupervised class map (NMC, interphase, electrolyte, void), particles and e_g/t_2g on the SEM grid."""

    title = "segment"
    run_text = "Segment"

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        from napari.layers import Image

        self.sem = ComboBox(label="SEM", choices=_layers_where(viewer, act.is_sem_layer, Image))
        self.stacks = ComboBox(label="OD stacks (registered)",
                               choices=_layers_where(viewer, _registered_od, Image))
        self.stacks_all = CheckBox(label="use every registered OD stack", value=True)
        super().__init__(viewer, [self.sem, self.stacks, self.stacks_all])

    def chosen_stacks(self):
        return chosen_stacks(self.viewer, None if self.stacks_all.value else self.stacks.value)

    def steps(self):
        sem, stacks = self.sem.value, self.chosen_stacks()
        if sem is None or not stacks:
            raise act.LayerError("an SEM layer and aligned OD stacks registered onto it are needed")

        return one_step("segmenting (chemistry + SEM texture)", lambda: act.segment(sem, stacks))


class ClassifyWidget(_ActionWidget):
    """Train the pixel classifier on annotation strokes (a Labels layer, classes 1–4) and predict.

    The features of the lamella are computed once and cached (:class:`ceimap.napari_plugin._actions.FeatureCache`);
    every *Train + predict* then refits on the annotated pixels alone and predicts coarse to fine
    (:class:`ceimap.napari_plugin._actions.LivePredictor`): a lattice of the region on screen matched to the canvas,
    shown at once, then the view at full resolution, then the whole image, each replacing the ``prediction``
    layer. *Live* does this after each edit of the annotations (debounced); an edit makes the work still
    running stale, and it stops. The uncertainty layer (normalised entropy) shows where to annotate next.
    *Predict* applies the current (trained or loaded) model without refitting. Models are saved and loaded as
    ceimap model files (pure data, :mod:`ceimap.segment.classifier`).
    """

    title = "classify"
    run_text = "Train + predict"
    debounce_ms = 400

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        from napari.layers import Image, Labels
        from qtpy.QtCore import QTimer

        self.sem = ComboBox(label="SEM", choices=_layers_where(viewer, act.is_sem_layer, Image))
        self.annotations = ComboBox(label="annotations", choices=_layers_where(viewer, lambda la: True, Labels))
        self.estimator = ComboBox(label="classifier", choices=["random_forest", "hist_gradient_boosting"],
                                  value="random_forest")
        self.live = CheckBox(label="live: re-predict after each edit", value=False)
        self.model_path = FileEdit(label="model file", mode="w", filter="*.npz",
                                   value=Path.home() / "ceimap-model.npz")
        self.predict_button = PushButton(text="Predict (current model)")
        self.save_button = PushButton(text="Save model")
        self.load_button = PushButton(text="Load model")
        self.new_annotations = PushButton(text="New annotation layer")
        super().__init__(viewer, [self.sem, self.annotations, self.new_annotations, self.estimator, self.live,
                                  self.predict_button, self.model_path, self.save_button, self.load_button])
        self.classifier = None
        self.predictor, self._maps_key, self._pending, self._watched, self._refit = None, None, False, None, True
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self._live_run)
        self.live.changed.connect(self._watch)
        self.annotations.changed.connect(lambda _v: self._watch(self.live.value))
        self.predict_button.changed.connect(self.start_predict)
        self.save_button.changed.connect(self.save_model)
        self.load_button.changed.connect(self.load_model)
        self.new_annotations.changed.connect(self.add_annotation_layer)

    def add_annotation_layer(self, _value=None):
        """An empty Labels layer on the SEM grid with the class colours, selected for painting."""
        from ._layers import classes_layer

        sem = self.sem.value
        if sem is None:
            self._fail(act.LayerError("choose the SEM layer first"))
            return None
        data, kwargs, _ = classes_layer(np.zeros(np.shape(sem.data), np.uint8), act._meta(sem)["pixel_size_nm"],
                                        name="annotations", opacity=0.8)
        layer = add_layers(self.viewer, [(data, kwargs, "labels")])[0]
        self.reset_choices()
        self.annotations.value = layer
        return layer

    # -- what runs in the worker ------------------------------------------------------------------------
    def _live_predictor(self, sem, stacks, spec=None):
        """The LivePredictor of these layers (its feature cache survives as long as the layers' content,
        registrations and the feature spec are unchanged)."""
        def ident(layer):
            meta = act._meta(layer)
            return (id(layer), id(layer.data), str(meta.get("matrix_stxm_to_sem")), str(meta.get("pixel_size_nm")))
        key = (ident(sem), tuple(ident(s) for s in stacks))
        old = self.predictor
        if old is not None and self._maps_key == key and (spec is None or old.cache.spec == spec):
            return old
        maps = act.lamella_maps(sem, stacks)
        cache = act.FeatureCache.for_lamella(maps, spec)
        if old is not None and old.cache.key == cache.key:
            cache = old.cache  # same features: keep the tiles computed so far
        self.predictor, self._maps_key = act.LivePredictor(maps, cache), key
        return self.predictor

    def start_predict(self, _value=None):
        """Predict with the current model (trained or loaded), without refitting."""
        if self.classifier is None:
            self._fail(act.LayerError("train a classifier or load a model first"))
            return None
        self._refit = False
        try:
            return self.start()
        finally:
            self._refit = True

    def steps(self):
        sem, ann = self.sem.value, self.annotations.value
        stacks = chosen_stacks(self.viewer)
        refit = self._refit
        if sem is None or (refit and ann is None) or not stacks:
            raise act.LayerError("an SEM layer, an annotation Labels layer and registered OD stacks are needed")
        labels = np.asarray(ann.data).copy() if refit else None
        estimator = self.estimator.value
        model = None if refit else self.classifier
        view, px_per_screen = self.view_on_screen(sem)
        pixel_nm = float(act._meta(sem)["pixel_size_nm"])

        def run():
            yield "spectral maps of the lamella"
            live = self._live_predictor(sem, stacks, None if model is None else model.spec)
            if model is not None:
                model.check_lamella(live.maps["sem"], live.maps["od_stacks"])
            for item in live.run(labels, view=view, data_px_per_screen_px=px_per_screen, estimator=estimator,
                                 classifier=model):
                if isinstance(item, act.Stage):
                    self.classifier = live.classifier or self.classifier
                    yield ("layers", item.layers(pixel_nm))
                    yield f"shown: {item.name}" + (f" (lattice step {item.step})" if item.step > 1 else "")
                else:
                    yield item
            return []  # every stage has been shown as it came
        return run()

    def _progress(self, message):
        if isinstance(message, tuple) and message and message[0] == "layers":
            add_layers(self.viewer, message[1])
            return
        super()._progress(message)

    def view_on_screen(self, sem):
        """SEM pixel slices of the field of view (the whole image when all of it is on screen) and the SEM
        pixels per screen pixel."""
        pixel_nm = float(act._meta(sem)["pixel_size_nm"])
        try:
            size = np.asarray(getattr(self.viewer, "_canvas_size", (1024, 1024)), float)[-2:]
        except Exception:  # noqa: BLE001 - a proxy may refuse private attributes: assume a typical canvas
            size = np.array([1024.0, 1024.0])
        scene = getattr(self.viewer, "scene", None)
        camera = scene.camera if scene is not None else self.viewer.camera  # napari >= 0.9: viewer.scene
        centre = np.asarray(camera.center, float)[-2:]
        zoom = float(camera.zoom)  # screen pixels per nm
        half = size / (2.0 * zoom)
        shape = np.shape(sem.data)
        region = act.visible_region(shape, centre - half, centre + half, pixel_nm)
        if region is None:
            region = (slice(0, shape[0]), slice(0, shape[1]))
        return region, 1.0 / (zoom * pixel_nm)

    def region_on_screen(self, sem):
        """SEM pixel slices of the field of view (None when the whole image is on screen)."""
        region, _ = self.view_on_screen(sem)
        if all(s.start == 0 and s.stop == n for s, n in zip(region, np.shape(sem.data))):
            return None
        return region

    # -- live re-prediction -------------------------------------------------------------------------------
    def _watch(self, on):
        if self._watched is not None:
            for ev in ("paint", "data"):
                getattr(self._watched.events, ev).disconnect(self._edited)
            self._watched = None
        layer = self.annotations.value
        if on and layer is not None:
            for ev in ("paint", "data"):
                getattr(layer.events, ev).connect(self._edited)
            self._watched = layer

    def _edited(self, _event=None):
        if self.predictor is not None:
            self.predictor.edit()  # what is running now predicts the old annotations: it stops at its next chunk
        self.timer.start(self.debounce_ms)

    def _live_run(self):
        if self.worker is not None:
            self._pending = True
            return
        self.start()

    def _done(self):
        super()._done()
        if self._pending:
            self._pending = False
            self.timer.start(self.debounce_ms)

    # -- model files --------------------------------------------------------------------------------------
    def save_model(self, _value=None):
        if self.classifier is None:
            self._fail(act.LayerError("train a classifier first"))
            return None
        path = Path(self.model_path.value)
        self.classifier.save(path)
        self.status.value = f"saved {path}"
        return path

    def load_model(self, _value=None):
        from ceimap.segment.classifier import PixelClassifier
        from ceimap.segment.errors import CeimapInputError

        try:
            self.classifier = PixelClassifier.load(Path(self.model_path.value))
        except CeimapInputError as exc:
            self._fail(exc)
            return None
        self.status.value = f"loaded {self.model_path.value}"
        return self.classifier


def _registered_od(layer) -> bool:
    meta = act._meta(layer)
    return act.is_stack_layer(layer) and meta.get("kind") == "od" and "matrix_stxm_to_sem" in meta


def chosen_stacks(viewer, one=None) -> list:
    """The OD stack layers to use: ``one`` alone, else one per edge (the aligned one when there are several)."""
    if one is not None:
        return [one]
    by_edge = {}
    for layer in viewer.layers:
        if not _registered_od(layer):
            continue
        edge = act._meta(layer).get("edge") or layer.name
        if edge not in by_edge or act._meta(layer).get("aligned"):
            by_edge[edge] = layer
    return list(by_edge.values())


class MeasureWidget(_ActionWidget):
    """Statistics of the current (possibly edited) class map: tables, key plots, export of a results folder."""

    title = "measure"
    run_text = "Measure"

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        from napari.layers import Image, Labels

        self.sem = ComboBox(label="SEM", choices=_layers_where(viewer, act.is_sem_layer, Image))
        self.classes = ComboBox(label="classes", choices=_layers_where(
            viewer, lambda la: act._meta(la).get("kind") == "classes", Labels))
        self.out_dir = FileEdit(label="export to", mode="d", value=Path.home() / "ceimap-results")
        self.overwrite = CheckBox(label="overwrite", value=False)
        self.export_button = PushButton(text="Export results + report")
        self.table = Table(value={"quantity": [], "value": []})
        self.particle_table = Table()
        self.spectrum_on_click = CheckBox(label="plot the spectra of a clicked pixel", value=False)
        super().__init__(viewer, [self.sem, self.classes, self.out_dir, self.overwrite, self.export_button,
                                  self.spectrum_on_click, self.table, self.particle_table])
        self.table.native.setMinimumHeight(190)
        self.particle_table.native.setMinimumHeight(150)
        self.export_button.changed.connect(self.export)
        self.figure = self.canvas = None
        self._add_canvas()
        self.spectrum_on_click.changed.connect(self._toggle_click)

    # plots: one matplotlib canvas under the tables
    def _add_canvas(self):
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            return
        self.figure = Figure(figsize=(5, 6), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(360)
        self.native.layout().addWidget(self.canvas)

    def steps(self):
        sem, classes = self.sem.value, self.classes.value
        stacks = chosen_stacks(self.viewer)
        if sem is None or classes is None or not stacks:
            raise act.LayerError("an SEM layer, a classes layer and registered OD stacks are needed")
        data = np.asarray(classes.data).copy()

        def measure():
            self.last_measure = act.measure(sem, stacks, data)
            return []
        return one_step("statistics on native STXM pixels", measure)

    def _finish(self, layers):
        super()._finish(layers)
        if getattr(self, "last_measure", None) is not None and self.status.value == "done":
            self.show(*self.last_measure)

    def show(self, result, analysis):
        """Fill the tables and plots from a measurement."""
        rows = summary_rows(analysis.summary)
        self.table.value = {"quantity": [r[0] for r in rows], "value": [r[1] for r in rows]}
        cols = ["particle_id", "equivalent_diameter_nm", "egt2g_mean", "egt2g_sd", "egt2g_n",
                "contact_ratio_electrolyte", "egt2g_surface_electrolyte_mean", "egt2g_surface_void_mean"]
        df = analysis.particles[[c for c in cols if c in analysis.particles.columns]].round(4)
        self.particle_table.value = df.to_dict(orient="list")
        if self.figure is not None:
            plot_measurement(self.figure, analysis)
            self.canvas.draw_idle()

    def export(self, _value=None):
        from napari.qt.threading import create_worker

        sem, classes = self.sem.value, self.classes.value
        stacks = chosen_stacks(self.viewer)
        if sem is None or classes is None or not stacks:
            self._fail(act.LayerError("an SEM layer, a classes layer and registered OD stacks are needed"))
            return None
        out, overwrite, data = Path(self.out_dir.value), bool(self.overwrite.value), np.asarray(classes.data).copy()
        worker = create_worker(act.export_run, out, sem, stacks, data, overwrite=overwrite,
                               _progress={"desc": "export results"})
        worker.returned.connect(lambda report: setattr(self.status, "value", f"report: {report}"))
        worker.errored.connect(self._fail)
        self.status.value = f"writing {out}…"
        worker.start()
        self.export_worker = worker
        return worker

    # spectra of a clicked pixel
    def _toggle_click(self, on):
        callbacks = self.viewer.mouse_drag_callbacks
        if on and self._on_click not in callbacks:
            callbacks.append(self._on_click)
        elif not on and self._on_click in callbacks:
            callbacks.remove(self._on_click)

    def _on_click(self, viewer, event):
        point = np.asarray(event.position)[-2:]
        self.plot_spectra_at(point)

    def plot_spectra_at(self, point_world):
        """Plot the OD spectrum of every stack layer at a world point (nm)."""
        if self.figure is None:
            return
        spectra = {}
        for layer in self.viewer.layers:
            if act.is_stack_layer(layer) and act._meta(layer).get("kind") == "od":
                found = act.spectrum_at(layer, point_world)
                if found is not None:
                    spectra[layer.name] = found
        self.figure.clear()
        axes = self.figure.subplots(max(len(spectra), 1), 1, squeeze=False)[:, 0]
        for ax, (name, (e, od)) in zip(axes, spectra.items()):
            ax.plot(e, od, lw=1)
            ax.set(xlabel="energy (eV)", ylabel="OD", title=f"{name} at y={point_world[0]:.0f}, "
                   f"x={point_world[1]:.0f} nm")
        self.canvas.draw_idle()
        return spectra


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The key numbers of a ``summary.json`` as (quantity, value) text rows for the measure table."""
    def fmt(v, digits=3):
        if v is None:
            return "—"
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        try:
            return f"{float(v):.{digits}g}"
        except (TypeError, ValueError):
            return str(v)
    rows = [("particles", fmt(summary.get("n_particles")))]
    for k, v in (summary.get("class_fractions") or {}).items():
        rows.append((f"fraction {k}", fmt(v)))
    t = summary.get("interphase_thickness_nm") or {}
    rows += [("interphase thickness mean (nm)", fmt(t.get("mean"))), ("thickness sd (nm)", fmt(t.get("sd"))),
             ("thickness resolvable", fmt(t.get("resolvable")))]
    for region, d in (summary.get("egt2g") or {}).items():
        rows.append((f"e_g/t_2g {region}", f"{fmt((d or {}).get('mean'))} ± {fmt((d or {}).get('sd'))} "
                                            f"(n={fmt((d or {}).get('n'))})"))
    test = (summary.get("tests") or {}).get("surface_electrolyte_vs_void") or {}
    rows += [("electrolyte vs void surface: p", fmt(test.get("p_value"))),
             ("  effect (electrolyte − void)", fmt(test.get("effect"))),
             ("  method / units", f"{test.get('method', '—')} / {fmt(test.get('n_units'))}")]
    bim = (summary.get("bimodality") or {}).get("bulk_particles") or {}
    rows.append(("bulk bimodal (dip p)", f"{fmt(bim.get('bimodal'))} ({fmt(bim.get('dip_p'))})"))
    for name, c in (summary.get("correlations") or {}).items():
        rows.append((name, f"r={fmt((c or {}).get('r'))}, p={fmt((c or {}).get('p'))}"))
    return rows


def plot_measurement(figure, analysis) -> None:
    """Histograms of e_g/t_2g per region and the per-particle ratio against size, on ``figure``."""
    figure.clear()
    ax_h, ax_p = figure.subplots(2, 1)
    px = analysis.pixels
    for region in ("bulk", "surface_electrolyte", "surface_void"):
        v = px.loc[px["region"] == region, "egt2g"].dropna() if "region" in px else []
        if len(v):
            ax_h.hist(v, bins=30, histtype="step", density=True, label=region)
    ax_h.set(xlabel="e_g/t_2g", ylabel="density", title="native STXM pixels by region")
    if ax_h.get_legend_handles_labels()[0]:
        ax_h.legend(fontsize=7)
    pt = analysis.particles
    if len(pt):
        ax_p.errorbar(pt["equivalent_diameter_nm"], pt["egt2g_mean"],
                      yerr=pt["egt2g_sd"] / np.sqrt(np.maximum(pt["egt2g_n"], 1)), fmt="o", ms=4)
    ax_p.set(xlabel="particle equivalent diameter (nm)", ylabel="mean e_g/t_2g", title="per particle (± s.e.)")
