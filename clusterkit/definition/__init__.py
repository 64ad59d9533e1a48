"""The cluster definition's machinery around the model in :mod:`clusterkit.config`.

- :mod:`.tables`: the table reader (declared keys, line numbers, ``FILE:LINE: key: what`` errors);
- :mod:`.values`: how numbers, names and sync paths are judged;
- :mod:`.source`: reading the file (bounded, UTF-8, lenient queries for a broken file);
- :mod:`.edits`: changing the file under a lock, its layout kept;
- :mod:`.files`: atomic writes and private directories.
"""
