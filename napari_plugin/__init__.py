"""ceimap's napari plugin (npe2 manifest ``napari.yaml``, plugin name ``ceimap``).

Contributions, all plain functions returning napari LayerData tuples ``(data, kwargs, layer_type)`` so
they can be called and tested without Qt:

- reader (:func:`ceimap.napari_plugin._reader.get_reader`): ``LAMELLA.toml`` (SEM in nm + OD stacks placed on the
  SEM frame by their registration affine + annotations), STXM stacks (NXstxm ``.hdf5/.h5/.nxs``, ALS
  ``.hdr``, aXis2000 ``.ncb``, TIFF with an energy list) and ``ceimap run`` output folders (classes and
  particles as Labels, the e_g/t_2g map);
- writer (:func:`ceimap.napari_plugin._writer.write_classes`): a Labels layer of class codes → uint8 TIFF;
- sample data (:mod:`ceimap.napari_plugin._sample_data`): the three example lamellae of ``datasets/``.

- widgets (:mod:`ceimap.napari_plugin._widgets`): preprocess, register, decompose, segment, measure — each gathers
  layers and options and runs one function of :mod:`ceimap.napari_plugin._actions` (plain functions over layers,
  tested without Qt) in a napari worker thread.
"""
