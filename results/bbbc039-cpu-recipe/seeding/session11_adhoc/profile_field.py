"""cProfile of the shipped default path on 3 BBBC039 test fields (after one warm-up pass):
the whole of predict (main thread), then one chunk's claims called in the main thread, so the
host work inside the chunk (lobe analysis, continuation bookkeeping, claims) shows too."""
import cProfile, pstats, time
from spiralnet_jax import data as data_lib, predict
p = predict.Predictor.pretrained()
exs = data_lib.load_split("test")[:3]
imgs = [predict.prepare_image(ex.image, predict.percentiles(p.config)) for ex in exs]
def chunk(img):
  origins = predict.selected_origins(p, img)
  return predict._chunk_claims(p, img, origins, 0, len(origins))  # pylint: disable=protected-access
for img in imgs:
  predict.predict_prepared(p, img); chunk(img)
for img in imgs:
  t = time.perf_counter(); predict.predict_prepared(p, img); print("field s", round(time.perf_counter() - t, 3))
for fn in (predict.predict_prepared, chunk):
  pr = cProfile.Profile(); pr.enable()
  for img in imgs:
    fn(p, img) if fn is predict.predict_prepared else fn(img)
  pr.disable()
  pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
