from payments.bootstrap import main

main()
