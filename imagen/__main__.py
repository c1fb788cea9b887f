from imagen.cli import main

main()
