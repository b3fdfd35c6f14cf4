"""jaxgen-data: a folder of pix2pix or CycleGAN images -> a TFDS dataset the trainer reads.

  jaxgen-data pix2pix --input_dir=datasets/facades --name=facades
  jaxgen-data cyclegan --input_dir=datasets/horse2zebra --name=my_horse2zebra

The layouts are those of pytorch-CycleGAN-and-pix2pix's datasets (jaxgen/data/folders.py).
The dataset is written as array_record under --data_dir (TFDS's default: ~/tensorflow_datasets),
and the command prints the config flags that train on it.
"""

from __future__ import annotations

from absl import app, flags

from jaxgen import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('input_dir', None, 'The folder of split subfolders (train/, val/, test/; '
                    'or trainA/, trainB/, testA/, testB/).')
flags.DEFINE_string('name', None, 'The dataset name (config.data.name), e.g. facades.')
flags.DEFINE_string('data_dir', '', 'TFDS data_dir to write to (config.data.data_dir); "" is '
                    'TFDS\'s default, ~/tensorflow_datasets.')
flags.DEFINE_integer('channels', 3, 'Store images grey (1) or RGB (3).')
flags.mark_flags_as_required(['input_dir', 'name'])


def config_flags(name: str, layout: str, splits: dict[str, int], data_dir: str,
                 shape: tuple[int, ...]) -> list[str]:
  """The --config.data flags that train on the dataset just written."""
  out = [f'--config.data.name={name}']
  if data_dir:
    out.append(f'--config.data.data_dir={data_dir}')
  if layout == 'pix2pix':
    evals = [s for s in ('val', 'test') if s in splits] or [next(iter(splits))]
    out += ['--config.data.source_key=a', '--config.data.target_key=b',
            f'--config.data.split={"train" if "train" in splits else next(iter(splits))}',
            f'--config.data.eval_split={evals[0]}']
  else:
    out += ['--config.data.split=trainA', '--config.data.target_split=trainB',
            '--config.data.eval_split=testA', '--config.data.target_eval_split=testB']
  out.append(f'--config.data.channels={shape[-1]}')
  return out


def main(argv: list[str]) -> None:
  from jaxgen.data import folders

  if len(argv) != 2 or argv[1] not in folders.LAYOUTS:
    runtime.fail(f'give the layout: jaxgen-data {{{",".join(folders.LAYOUTS)}}} '
                 '--input_dir=DIR --name=NAME')
  layout = argv[1]
  try:
    done = folders.build(FLAGS.name, FLAGS.input_dir, layout, FLAGS.data_dir or None,
                         FLAGS.channels)
  except folders.FolderError as e:
    runtime.fail(str(e))
  for path, reason in done['skipped']:
    print(f'skipped {path}: {reason}')
  counts = ', '.join(f'{split} {count}' for split, count in done['splits'].items())
  print(f'wrote {FLAGS.name} ({counts} examples; the first is {done["shape"]}) to '
        f'{done["path"]}')
  print('train on it with: ' + ' '.join(
      config_flags(FLAGS.name, layout, done['splits'], FLAGS.data_dir, done['shape'])))


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
