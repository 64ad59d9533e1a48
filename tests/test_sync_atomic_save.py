"""Editors and tools save by writing a temp file and renaming it over the original."""

from __future__ import annotations

import asyncio
import os

from clusterkit.runtime import Runtime
from conftest import write_cluster


def test_a_file_replaced_by_rename_reaches_every_node(pm, tmp_path):
    cfg = write_cluster(tmp_path / "c.toml", "127.91.9", nodes=2,
                        extra='\n[[sync]]\nname = "www"\npath = "/srv/www"\n'
                        '\n[dns]\nenabled = false\n\n[panel]\nenabled = false\n')
    src = tmp_path / "manager" / "srv" / "www"
    src.mkdir(parents=True)
    (src / "index.html").write_text("version 1\n")

    async def scenario():
        manager = Runtime(str(cfg), pm, watch_config=False)
        await manager.start()
        try:
            targets = [tmp_path / n / "srv" / "www" / "index.html" for n in ("node1", "node2")]
            for _ in range(200):
                if all(t.exists() for t in targets):
                    break
                await asyncio.sleep(0.02)
            for version in (2, 3, 4):
                (src / "index.html.tmp").write_text(f"version {version}\n")
                os.replace(src / "index.html.tmp", src / "index.html")
                for _ in range(200):
                    if all(t.exists() and t.read_text() == f"version {version}\n" for t in targets):
                        break
                    await asyncio.sleep(0.02)
                assert [t.read_text() for t in targets] == [f"version {version}\n"] * 2
                assert not any((t.parent / "index.html.tmp").exists() for t in targets)
        finally:
            await manager.stop()

    asyncio.run(scenario())
