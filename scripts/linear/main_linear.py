"""solo-learn style script: same as the `occon-linear` console command."""
from occon_plugin.cli.linear import main

if __name__ == "__main__":
    main()
