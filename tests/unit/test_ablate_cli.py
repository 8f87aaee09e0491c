"""ocean ablate (pipelines/ablate.py): bad requests are refused before any run (one tiny Tune grid end to
end: tests/integration/test_ablate_grid.py)."""

from __future__ import annotations

import pytest

from ocean.ablation import AblationError


def test_switches_cannot_be_overridden(tmp_path):
    from pipelines.ablate import AblateSettings, ablate

    with pytest.raises(AblationError, match="switches"):
        ablate(AblateSettings(str(tmp_path), {"otb": str(tmp_path)}, str(tmp_path / "o"),
                              overrides=("model.head.align=false",)))
    with pytest.raises(AblationError, match="validation"):
        ablate(AblateSettings(str(tmp_path), {"otb": str(tmp_path)}, str(tmp_path / "o"), validation="vot2018"))
