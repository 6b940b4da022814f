"""model-index.yml and configs/<method>/metafile.yml: every shipped config is in a metafile, and
every metafile entry is a config that loads and passes the config checks (the wrapper of its
library, its ``_scope_``, its teacher); published and measured numbers say where they come from."""
import glob
import importlib
import os.path as osp

import pytest
import yaml
from mmengine.config import Config

from tests.conftest import ROOT
from tests.test_configs.common import WRAPPER_SCOPES, check_distill_config


def metafile_entries() -> list[dict]:
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    entries = []
    for path in index['Import']:
        with open(osp.join(ROOT, path)) as f:
            meta = yaml.safe_load(f)
        (collection, ) = meta['Collections']
        for model in meta['Models']:
            entries.append(dict(model, _collection=collection, _metafile=path))
    return entries


ENTRIES = metafile_entries()


def test_every_config_is_in_a_metafile_once():
    listed = [e['Config'] for e in ENTRIES]
    shipped = sorted(osp.relpath(p, ROOT)
                     for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py')))
    assert sorted(listed) == shipped
    for entry in ENTRIES:
        assert entry['_metafile'] == osp.join(osp.dirname(entry['Config']), 'metafile.yml')
        assert entry['Name'] == osp.splitext(osp.basename(entry['Config']))[0]


def test_collections_and_results_name_their_sources():
    for entry in ENTRIES:
        collection = entry['_collection']
        assert entry['In Collection'] == collection['Name']
        assert collection['Paper']['URL'].startswith('https://')
        assert osp.isfile(osp.join(ROOT, collection['README']))
        for result in entry.get('Results', []):
            assert result['Source'].startswith('published: '), result
        for measured in collection.get('Measured (ours)', []):
            assert measured['Source'].startswith('ours: docs/'), measured
            assert osp.isfile(osp.join(ROOT, measured['Source'].split()[1].rstrip(',')))


@pytest.mark.parametrize('entry', ENTRIES, ids=[e['Name'] for e in ENTRIES])
def test_metafile_entry_is_a_config_that_loads(entry):
    cfg = Config.fromfile(osp.join(ROOT, entry['Config']))
    wrapper = cfg.model.type
    lib = WRAPPER_SCOPES[wrapper]
    pytest.importorskip(lib)
    import mmdistill  # noqa: F401
    models = importlib.import_module(f'{lib}.registry').MODELS
    check_distill_config(cfg, osp.relpath(entry['Config'], 'configs'), wrapper, models)
    teacher = entry['Metadata']['Teacher config']
    specs = cfg.model.teachers.values() if 'teachers' in cfg.model else [cfg.model.teacher]
    configs = [s.config for s in specs if 'config' in s]
    assert configs == ([teacher] if isinstance(teacher, str) and configs else
                       teacher if configs else [])
