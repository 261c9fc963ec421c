from bank.bootstrap import main

main()
