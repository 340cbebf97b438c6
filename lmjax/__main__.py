"""`python -m lmjax <command> [flags]`, the same as the `lmjax` console script."""

if __name__ == "__main__":
    from lmjax.cli import main

    main()
