"""jaxgen-translate: an image-to-image run's generator applied to a folder of images.

  jaxgen-translate --workdir=runs/pix2pix --input_dir=my_edges --output_dir=out

Every PNG/JPEG in --input_dir (not its subfolders) is read, converted to the model's
channels (grey or RGB) and preprocessed as the run's training data was (`data.resize`:
'pad' pads a smaller image to the model's size, 'resize' centre-crops and resizes;
an image that does not fit is resized, bicubic, to the model's size). Translations are
computed `--batch_size` at a time, sharded over the devices, and written to --output_dir
as PNGs with the input's file stem (a padded input gets its padding cropped off again, so
the output has the input's size; otherwise it has the model's). A file that cannot be read
as an image is reported by name and skipped; the others are still translated.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from absl import app, flags
from PIL import Image, UnidentifiedImageError

from jaxgen import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A Pix2Pix (or other image-to-image) training workdir.')
flags.DEFINE_string('input_dir', None, 'Folder of PNG/JPEG images to translate.')
flags.DEFINE_string('output_dir', None, 'Where to write the translations (PNG, same stems).')
flags.DEFINE_enum('direction', 'a2b', ['a2b', 'b2a'],
                  'Which way to translate: CycleGAN both ways, Pix2Pix a2b only.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('batch_size', 64, 'Images per call (split over the devices).')
flags.DEFINE_integer('seed', 0, 'Dropout seed (Pix2Pix translates with dropout on).')
flags.mark_flags_as_required(['workdir', 'input_dir', 'output_dir'])

EXTENSIONS = ('.png', '.jpg', '.jpeg')


def _read(path: str, data_cfg) -> tuple[np.ndarray, tuple[int, int] | None]:
  """(float [size, size, C] in [-1, 1], the (top, left, height, width) to crop the output
  back to, or None). Raises OSError/ValueError for a file that is not a readable image."""
  from jaxgen.data import pipeline

  with Image.open(path) as image:
    image = np.asarray(image.convert('L' if data_cfg.channels == 1 else 'RGB'))
  image = image.reshape(*image.shape[:2], data_cfg.channels)
  size, (height, width) = data_cfg.image_size, image.shape[:2]
  try:
    out = pipeline.preprocess_image(image, data_cfg)
  except pipeline.DataError:
    resized = Image.fromarray(image[..., 0] if data_cfg.channels == 1 else image)
    out = np.asarray(resized.resize((size, size), Image.BICUBIC), np.float32)
    return out.reshape(size, size, -1) / 127.5 - 1.0, None
  if data_cfg.resize == 'pad' and (height, width) != (size, size):
    return out, ((size - height) // 2, (size - width) // 2, height, width)
  return out, None


def translate_folder(workdir: str, input_dir: str, output_dir: str, *, step: int | None = None,
                     batch_size: int = 64, seed: int = 0, direction: str = 'a2b'
                     ) -> dict[str, Any]:
  """Translate every PNG/JPEG of `input_dir` into `output_dir`; returns {'written': [paths],
  'skipped': [(name, reason)], 'step': step}."""
  import jax

  from jaxgen import build, inference, metrics

  if not os.path.isdir(input_dir):
    raise FileNotFoundError(f'--input_dir={input_dir} is not a folder')
  if os.path.abspath(input_dir) == os.path.abspath(output_dir):
    raise ValueError('--output_dir must differ from --input_dir: translations would overwrite '
                     'the inputs')
  s, state, step, config = inference.restore_for_sampling(workdir, step)
  if s.objective.translate is None:
    raise ValueError(f'{workdir} is a {config.objective} run, not an image-to-image one: '
                     'jaxgen-translate needs a Pix2Pix (or CycleGAN) workdir')
  if direction not in s.objective.translation_directions:
    raise ValueError(f'--direction={direction}: a {config.objective} model translates '
                     f'{" and ".join(s.objective.translation_directions)} only')
  names = sorted(n for n in os.listdir(input_dir)
                 if n.lower().endswith(EXTENSIONS) and os.path.isfile(os.path.join(input_dir, n)))
  if not names:
    raise FileNotFoundError(f'no PNG or JPEG files in {input_dir}')
  os.makedirs(output_dir, exist_ok=True)
  batch_size = min(batch_size, len(names))
  batch_size += (-batch_size) % jax.device_count()
  translate = build.jit_translate(s, batch_size, direction)
  written, skipped, start = [], [], time.perf_counter()
  key = jax.random.key(seed)
  for first in range(0, len(names), batch_size):
    batch_names, images, crops = [], [], []
    for name in names[first:first + batch_size]:
      try:
        image, crop = _read(os.path.join(input_dir, name), config.data)
      except (OSError, ValueError, UnidentifiedImageError) as e:
        skipped.append((name, f'{type(e).__name__}: {e}'))
        metrics.print_line(f'skipped {name}: not a readable image ({type(e).__name__}: {e})')
        continue
      batch_names.append(name)
      images.append(image)
      crops.append(crop)
    if not images:
      continue
    batch = np.stack(images + [images[-1]] * (batch_size - len(images)))
    outputs = translate(state, batch, jax.random.fold_in(key, first))[:len(images)]
    for name, output, crop in zip(batch_names, outputs, crops):
      if crop is not None:
        top, left, height, width = crop
        output = output[top:top + height, left:left + width]
      path = os.path.join(output_dir, os.path.splitext(name)[0] + '.png')
      metrics.save_png(path, output)
      written.append(path)
    done, elapsed = min(first + batch_size, len(names)), time.perf_counter() - start
    metrics.print_line(f'translated {done}/{len(names)} | {len(written) / elapsed:.1f} img/s | '
                       f'ETA {(len(names) - done) * elapsed / done:.0f}s')
  return {'written': written, 'skipped': skipped, 'step': step}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    runtime.fail(f'unexpected arguments {argv[1:]}')
  runtime.configure_jax()
  from jaxgen.data import pipeline

  try:
    result = translate_folder(FLAGS.workdir, FLAGS.input_dir, FLAGS.output_dir, step=FLAGS.step,
                              batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                              direction=FLAGS.direction)
  except (FileNotFoundError, ValueError, pipeline.DataError) as e:
    runtime.fail(str(e))
  print(f'wrote {len(result["written"])} translations (step {result["step"]}) to '
        f'{FLAGS.output_dir}' + (f'; skipped {len(result["skipped"])}: ' + ', '.join(
            name for name, _ in result['skipped']) if result['skipped'] else ''))


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
